"""conversations and messages (chat history per user)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        uuid_pk(),
        tenant_fk(),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        timestamp(),
        timestamp("updated_at"),
    )
    op.create_index("ix_conversations_tenant_user", "conversations", ["tenant_id", "user_subject", "updated_at"])
    op.create_table(
        "messages",
        uuid_pk(),
        tenant_fk(),
        sa.Column("conversation_id", sa.Uuid, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("citations", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("model", sa.Text),
        sa.Column("specialist", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'")),
        timestamp(),
        sa.CheckConstraint("role IN ('user','assistant')", name="ck_messages_role"),
    )
    op.create_index("ix_messages_conversation", "messages", ["conversation_id", "created_at"])
    op.create_index("ix_messages_tenant_id", "messages", ["tenant_id"])
    secure_tenant_tables({"conversations": CRUD, "messages": CRUD})


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("conversations")
