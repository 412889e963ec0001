"""identity (security issue 12): the time step of each account's last accepted TOTP code, so a
code cannot be used twice.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("users", "totp_last_step")
