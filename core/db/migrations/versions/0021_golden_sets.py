"""per-tenant golden datasets: uploaded by a tenant admin (API or inbox folder), validated and versioned

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "golden_datasets",
        uuid_pk(),
        tenant_fk(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("content", JSONB, nullable=False),
        sa.Column("questions", sa.Integer, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("uploaded_by", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        timestamp(),
        sa.UniqueConstraint("tenant_id", "version", name="uq_golden_datasets_tenant_version"),
        sa.CheckConstraint("questions > 0", name="ck_golden_datasets_questions"),
    )
    # Versions are history: a new upload is a new row, never an update.
    secure_tenant_tables({"golden_datasets": "SELECT, INSERT"})


def downgrade() -> None:
    op.drop_table("golden_datasets")
