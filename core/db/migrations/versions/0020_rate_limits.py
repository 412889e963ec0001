"""rate limits shared by every API process: one token bucket per key (user, tenant, login IP, login
name), updated atomically with INSERT … ON CONFLICT DO UPDATE, so N workers or pods allow the limit once,
not N times (serving/ratelimit.py). Keys only, no tenant data: no row-level security, the app role may
read and write it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from core.db.migrations.helpers import roles

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app, _owner = roles()
    op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_rate_limit_buckets_updated", "rate_limit_buckets", ["updated_at"])
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limit_buckets TO "{app}"')


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
