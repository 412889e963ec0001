"""agent runs: specialist, tier, verification outcome and the reasoning trace of every answer

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from core.rls import tenant_rls_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Uuid),
        sa.Column("message_id", sa.Uuid),
        sa.Column("specialist", sa.Text, nullable=False),
        sa.Column("model_tier", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("route_confidence", sa.Float),
        sa.Column("outcome", sa.Text, nullable=False),  # verified | abstained | downgraded
        sa.Column("escalations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("trace", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_agent_runs_tenant_user", "agent_runs", ["tenant_id", "user_subject", "created_at"])
    for stmt in tenant_rls_sql("agent_runs", app_role=app, owner_role=owner):
        op.execute(stmt)
    op.execute(f'GRANT SELECT, INSERT ON agent_runs TO "{app}"')


def downgrade() -> None:
    op.drop_table("agent_runs")
