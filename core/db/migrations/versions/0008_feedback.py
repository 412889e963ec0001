"""feedback on answers and the source boosts derived from it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        uuid_pk(),
        tenant_fk(),
        sa.Column("message_id", sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("rating", sa.Text, nullable=False),  # up | down | 1..5
        sa.Column("value", sa.Float, nullable=False),  # normalised to [-1, 1]
        sa.Column("comment", sa.Text),
        sa.Column("cited", JSONB, nullable=False, server_default=sa.text("'[]'")),  # [{chunk_id, document_id, score}]
        timestamp(),
        timestamp("updated_at"),
        sa.UniqueConstraint("message_id", "user_subject", name="uq_feedback_message_user"),
    )
    op.create_index("ix_feedback_tenant_time", "feedback", ["tenant_id", "updated_at"])
    op.create_table(
        "source_boosts",
        tenant_fk(),
        sa.Column("kind", sa.Text, nullable=False),  # chunk | document
        sa.Column("source_id", sa.Uuid, nullable=False),
        sa.Column("boost", sa.Float, nullable=False),
        sa.Column("votes", sa.Float, nullable=False),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "source_id"),
        sa.CheckConstraint("boost BETWEEN 0.5 AND 2.0", name="ck_boost_bounds"),
    )
    # Boosts are written by the pipeline (owner role); the application only reads them.
    secure_tenant_tables({"feedback": "SELECT, INSERT, UPDATE", "source_boosts": "SELECT"})


def downgrade() -> None:
    op.drop_table("source_boosts")
    op.drop_table("feedback")
