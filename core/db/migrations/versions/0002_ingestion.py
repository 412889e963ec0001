"""ingestion: review (steward approval) fields, queue timestamps, model-agnostic embeddings,
BM25 postings and per-tenant lexical statistics

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False,
                                         server_default=sa.func.now()))
    op.add_column("documents", sa.Column("format", sa.Text))
    op.add_column("documents", sa.Column("review_status", sa.Text))  # pending | approved | rejected
    op.add_column("documents", sa.Column("reviewed_by", sa.Text))
    op.add_column("documents", sa.Column("reviewed_at", sa.DateTime(timezone=True)))
    op.add_column("documents", sa.Column("review_reason", sa.Text))
    op.add_column("documents", sa.Column("reviewed_hash", sa.Text))
    op.create_check_constraint(
        "ck_documents_review_status", "documents",
        "review_status IS NULL OR review_status IN ('pending','approved','rejected')",
    )
    op.create_index("ix_documents_queue", "documents", ["status", "queued_at", "id"])

    # Embeddings carry their model and dimension; HNSW indexes are per dimension (partial,
    # on a typed cast), so a tenant can move to another embedding model without a schema change.
    op.execute("DROP INDEX IF EXISTS ix_chunks_embedding_hnsw")
    op.execute("DROP INDEX IF EXISTS ix_chunks_tsv")
    op.drop_column("chunks", "tsv")
    op.execute("ALTER TABLE chunks ALTER COLUMN embedding TYPE vector")
    op.add_column("chunks", sa.Column("embedding_model", sa.Text))
    op.add_column("chunks", sa.Column("embedding_dim", sa.Integer))
    op.add_column("chunks", sa.Column("lexical_len", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "CREATE INDEX ix_chunks_embedding_384 ON chunks USING hnsw ((embedding::vector(384)) vector_cosine_ops) "
        "WHERE embedding_dim = 384"
    )

    # BM25 inverted index: postings per chunk, statistics per tenant (kept in the same transaction
    # as the chunk writes, so scores are exact BM25 over what is serving).
    op.create_table(
        "chunk_terms",
        tenant_fk(),
        sa.Column("chunk_id", sa.Uuid, sa.ForeignKey("chunks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("term", sa.Text, nullable=False),
        sa.Column("tf", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("chunk_id", "term"),
    )
    op.create_index("ix_chunk_terms_tenant_term", "chunk_terms", ["tenant_id", "term"])
    op.create_table(
        "lexical_stats",
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("n_chunks", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total_len", sa.BigInteger, nullable=False, server_default="0"),
    )
    secure_tenant_tables({"chunk_terms": CRUD, "lexical_stats": CRUD})


def downgrade() -> None:
    op.drop_table("lexical_stats")
    op.drop_table("chunk_terms")
    op.execute("DROP INDEX IF EXISTS ix_chunks_embedding_384")
    for col in ("lexical_len", "embedding_dim", "embedding_model"):
        op.drop_column("chunks", col)
    for col in ("reviewed_hash", "review_reason", "reviewed_at", "reviewed_by", "review_status", "format", "queued_at"):
        op.drop_column("documents", col)
