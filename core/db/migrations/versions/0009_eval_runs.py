"""golden-dataset evaluation runs with per-specialist scores, regressions and report

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        uuid_pk(),
        tenant_fk(),
        sa.Column("dataset_version", sa.Text, nullable=False),
        sa.Column("overall", JSONB, nullable=False),
        sa.Column("per_specialist", JSONB, nullable=False),
        sa.Column("per_question", JSONB, nullable=False),
        sa.Column("regressions", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("report_path", sa.Text),
        timestamp(),
    )
    op.create_index("ix_eval_runs_tenant_time", "eval_runs", ["tenant_id", "created_at"])
    secure_tenant_tables({"eval_runs": "SELECT, INSERT"})


def downgrade() -> None:
    op.drop_table("eval_runs")
