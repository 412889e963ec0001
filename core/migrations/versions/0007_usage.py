"""usage records per model call (tenant, user, agent, tier, tokens, cost) for budgets and cost tracking

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import context, op

from core.rls import tenant_rls_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.Numeric(14, 6), nullable=False),
        sa.Column("run_id", sa.Uuid),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_usage_tenant_time", "usage_records", ["tenant_id", "created_at"])
    for stmt in tenant_rls_sql("usage_records", app_role=app, owner_role=owner):
        op.execute(stmt)
    op.execute(f'GRANT SELECT, INSERT ON usage_records TO "{app}"')


def downgrade() -> None:
    op.drop_table("usage_records")
