"""feedback on answers and the source boosts derived from it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from core.rls import tenant_rls_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.create_table(
        "feedback",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message_id", sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("rating", sa.Text, nullable=False),  # up | down | 1..5
        sa.Column("value", sa.Float, nullable=False),  # normalised to [-1, 1]
        sa.Column("comment", sa.Text),
        sa.Column("cited", JSONB, nullable=False, server_default=sa.text("'[]'")),  # [{chunk_id, document_id, score}]
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("message_id", "user_subject", name="uq_feedback_message_user"),
    )
    op.create_index("ix_feedback_tenant_time", "feedback", ["tenant_id", "updated_at"])
    op.create_table(
        "source_boosts",
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # chunk | document
        sa.Column("source_id", sa.Uuid, nullable=False),
        sa.Column("boost", sa.Float, nullable=False),
        sa.Column("votes", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "source_id"),
        sa.CheckConstraint("boost BETWEEN 0.5 AND 2.0", name="ck_boost_bounds"),
    )
    for table in ("feedback", "source_boosts"):
        for stmt in tenant_rls_sql(table, app_role=app, owner_role=owner):
            op.execute(stmt)
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON feedback TO "{app}"')
    op.execute(f'GRANT SELECT ON source_boosts TO "{app}"')


def downgrade() -> None:
    op.drop_table("source_boosts")
    op.drop_table("feedback")
