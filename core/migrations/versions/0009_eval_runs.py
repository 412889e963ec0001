"""golden-dataset evaluation runs with per-specialist scores, regressions and report

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from core.rls import tenant_rls_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("dataset_version", sa.Text, nullable=False),
        sa.Column("overall", JSONB, nullable=False),
        sa.Column("per_specialist", JSONB, nullable=False),
        sa.Column("per_question", JSONB, nullable=False),
        sa.Column("regressions", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("report_path", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_eval_runs_tenant_time", "eval_runs", ["tenant_id", "created_at"])
    for stmt in tenant_rls_sql("eval_runs", app_role=app, owner_role=owner):
        op.execute(stmt)
    op.execute(f'GRANT SELECT, INSERT ON eval_runs TO "{app}"')


def downgrade() -> None:
    op.drop_table("eval_runs")
