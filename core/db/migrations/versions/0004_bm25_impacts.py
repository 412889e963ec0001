"""BM25 at scale: postings carry access attributes, length and an impact score (so the top
postings of a term are read straight from an index, with no join), document frequencies are kept
per tenant and term

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunk_terms", sa.Column("classification", sa.SmallInteger, nullable=False, server_default="1"))
    op.add_column("chunk_terms", sa.Column("acl_groups", ARRAY(sa.Text), nullable=False,
                                           server_default=sa.text("'{}'")))
    op.add_column("chunk_terms", sa.Column("lexical_len", sa.Integer, nullable=False, server_default="0"))
    op.add_column("chunk_terms", sa.Column("impact", sa.Float(precision=24), nullable=False, server_default="0"))
    op.execute(
        """
        UPDATE chunk_terms ct SET classification = c.classification, acl_groups = c.acl_groups,
               lexical_len = c.lexical_len,
               impact = ct.tf * 2.2 / (ct.tf + 1.2 * (0.25 + 0.75 * c.lexical_len / greatest(
                   (SELECT total_len::float8 / greatest(n_chunks, 1) FROM lexical_stats s
                    WHERE s.tenant_id = ct.tenant_id), 1)))
        FROM chunks c WHERE c.id = ct.chunk_id
        """
    )
    op.execute("DROP INDEX IF EXISTS ix_chunk_terms_tenant_term")
    # Covering: the top postings of a term, with everything scoring and access control need, come
    # from an index-only scan (no heap visit per posting).
    op.execute("CREATE INDEX ix_chunk_terms_impact ON chunk_terms (tenant_id, term, impact DESC) "
               "INCLUDE (chunk_id, tf, lexical_len, classification, acl_groups)")
    op.create_table(
        "term_stats",
        tenant_fk(),
        sa.Column("term", sa.Text, nullable=False),
        sa.Column("df", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "term"),
    )
    op.execute("INSERT INTO term_stats (tenant_id, term, df) SELECT tenant_id, term, count(*) FROM chunk_terms "
               "GROUP BY tenant_id, term")
    secure_tenant_tables({"term_stats": CRUD})


def downgrade() -> None:
    op.drop_table("term_stats")
    op.execute("DROP INDEX IF EXISTS ix_chunk_terms_impact")
    op.execute("CREATE INDEX ix_chunk_terms_tenant_term ON chunk_terms (tenant_id, term)")
    for col in ("impact", "lexical_len", "acl_groups", "classification"):
        op.drop_column("chunk_terms", col)
