"""usage records per model call (tenant, user, agent, tier, tokens, cost) for budgets and cost tracking

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        uuid_pk(),
        tenant_fk(),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost", sa.Numeric(14, 6), nullable=False),
        sa.Column("run_id", sa.Uuid),
        timestamp(),
    )
    op.create_index("ix_usage_tenant_time", "usage_records", ["tenant_id", "created_at"])
    secure_tenant_tables({"usage_records": "SELECT, INSERT"})


def downgrade() -> None:
    op.drop_table("usage_records")
