"""agent runs: specialist, tier, verification outcome and the reasoning trace of every answer

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_runs",
        uuid_pk(),
        tenant_fk(),
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
        timestamp(),
    )
    op.create_index("ix_agent_runs_tenant_user", "agent_runs", ["tenant_id", "user_subject", "created_at"])
    secure_tenant_tables({"agent_runs": "SELECT, INSERT"})


def downgrade() -> None:
    op.drop_table("agent_runs")
