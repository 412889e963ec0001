"""versioned search index: index versions with an atomic active pointer (eval-gated promotion),
chunk generations (a rebuild writes a complete new generation next to the serving one), BM25
statistics per generation, source boosts per index version, the index version on every answer

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An index version = one chunk generation (chunks + BM25 postings/statistics) + one boost set.
    # A boosts-only refresh shares the serving generation; a rebuild has its own.
    op.create_table(
        "index_versions",
        tenant_fk(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("chunk_generation", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # initial | rebuild | boosts
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("config", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("manifest", JSONB, nullable=False, server_default=sa.text("'{}'")),  # document id -> hash
        sa.Column("stats", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("evaluation", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("error", sa.Text),
        timestamp(),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("tenant_id", "version"),
        sa.CheckConstraint("status IN ('building','candidate','active','retired','rejected','failed','superseded')",
                           name="ck_index_versions_status"),
    )
    # The pointer: exactly one active version per tenant; promotion flips it in one transaction.
    op.create_index("uq_index_versions_active", "index_versions", ["tenant_id"], unique=True,
                    postgresql_where=sa.text("status = 'active'"))
    op.create_index("uq_index_versions_pending", "index_versions", ["tenant_id"], unique=True,
                    postgresql_where=sa.text("status IN ('building','candidate')"))
    op.execute("INSERT INTO index_versions (tenant_id, version, chunk_generation, status, kind, reason, decided_at) "
               "SELECT id, 1, 1, 'active', 'initial', 'created with the tenant', now() FROM tenants")

    op.add_column("chunks", sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
    op.execute("DROP INDEX IF EXISTS ix_chunks_tenant_document")
    op.create_index("ix_chunks_tenant_generation_document", "chunks", ["tenant_id", "generation", "document_id"])

    op.add_column("chunk_terms", sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
    op.execute("DROP INDEX IF EXISTS ix_chunk_terms_impact")
    op.execute("CREATE INDEX ix_chunk_terms_impact ON chunk_terms (tenant_id, generation, term, impact DESC) "
               "INCLUDE (chunk_id, tf, lexical_len, classification, acl_groups)")

    op.add_column("term_stats", sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
    op.execute("ALTER TABLE term_stats DROP CONSTRAINT term_stats_pkey")
    op.create_primary_key("term_stats_pkey", "term_stats", ["tenant_id", "generation", "term"])
    op.add_column("lexical_stats", sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
    op.execute("ALTER TABLE lexical_stats DROP CONSTRAINT lexical_stats_pkey")
    op.create_primary_key("lexical_stats_pkey", "lexical_stats", ["tenant_id", "generation"])

    # Boosts belong to an index version and survive rebuilds: chunk boosts are keyed by the chunk's
    # content hash within its document (chunk ids differ per generation), document boosts by id.
    # They are derived data (recomputed from the feedback table), so the old table is replaced.
    op.drop_table("source_boosts")
    op.create_table(
        "source_boosts",
        tenant_fk(),
        sa.Column("index_version", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # chunk | document
        sa.Column("document_id", sa.Uuid, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False, server_default=""),  # '' for document boosts
        sa.Column("boost", sa.Float, nullable=False),
        sa.Column("votes", sa.Float, nullable=False),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "index_version", "kind", "document_id", "content_hash"),
        sa.CheckConstraint("boost BETWEEN 0.5 AND 2.0", name="ck_boost_bounds"),
        sa.CheckConstraint("kind IN ('chunk','document')", name="ck_boost_kind"),
    )

    op.add_column("eval_runs", sa.Column("kind", sa.Text, nullable=False, server_default="nightly"))  # | gate
    op.add_column("eval_runs", sa.Column("index_version", sa.Integer))
    op.add_column("agent_runs", sa.Column("index_version", sa.Integer))
    op.add_column("messages", sa.Column("index_version", sa.Integer))
    # Versions and boosts are written by the pipeline (owner role); the application only reads them.
    secure_tenant_tables({"index_versions": "SELECT", "source_boosts": "SELECT"})


def downgrade() -> None:
    op.drop_column("messages", "index_version")
    op.drop_column("agent_runs", "index_version")
    op.drop_column("eval_runs", "index_version")
    op.drop_column("eval_runs", "kind")
    op.drop_table("source_boosts")
    op.create_table(
        "source_boosts",
        tenant_fk(),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("source_id", sa.Uuid, nullable=False),
        sa.Column("boost", sa.Float, nullable=False),
        sa.Column("votes", sa.Float, nullable=False),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "source_id"),
        sa.CheckConstraint("boost BETWEEN 0.5 AND 2.0", name="ck_boost_bounds"),
    )
    secure_tenant_tables({"source_boosts": "SELECT"})
    op.execute("DELETE FROM chunks WHERE generation <> (SELECT chunk_generation FROM index_versions v "
               "WHERE v.tenant_id = chunks.tenant_id AND v.status = 'active')")
    for table in ("term_stats", "lexical_stats"):
        op.execute(f"DELETE FROM {table} t WHERE generation <> (SELECT chunk_generation FROM index_versions v "
                   "WHERE v.tenant_id = t.tenant_id AND v.status = 'active')")
    op.execute("ALTER TABLE lexical_stats DROP CONSTRAINT lexical_stats_pkey")
    op.drop_column("lexical_stats", "generation")
    op.create_primary_key("lexical_stats_pkey", "lexical_stats", ["tenant_id"])
    op.execute("ALTER TABLE term_stats DROP CONSTRAINT term_stats_pkey")
    op.drop_column("term_stats", "generation")
    op.create_primary_key("term_stats_pkey", "term_stats", ["tenant_id", "term"])
    op.execute("DROP INDEX IF EXISTS ix_chunk_terms_impact")
    op.drop_column("chunk_terms", "generation")
    op.execute("CREATE INDEX ix_chunk_terms_impact ON chunk_terms (tenant_id, term, impact DESC) "
               "INCLUDE (chunk_id, tf, lexical_len, classification, acl_groups)")
    op.execute("DROP INDEX IF EXISTS ix_chunks_tenant_generation_document")
    op.drop_column("chunks", "generation")
    op.create_index("ix_chunks_tenant_document", "chunks", ["tenant_id", "document_id"])
    op.drop_table("index_versions")
