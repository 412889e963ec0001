"""conversations and messages (chat history per user)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from core.rls import tenant_rls_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_conversations_tenant_user", "conversations", ["tenant_id", "user_subject", "updated_at"])
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("conversation_id", sa.Uuid, sa.ForeignKey("conversations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("citations", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("model", sa.Text),
        sa.Column("specialist", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('user','assistant')", name="ck_messages_role"),
    )
    op.create_index("ix_messages_conversation", "messages", ["conversation_id", "created_at"])
    op.create_index("ix_messages_tenant_id", "messages", ["tenant_id"])
    for table in ("conversations", "messages"):
        for stmt in tenant_rls_sql(table, app_role=app, owner_role=owner):
            op.execute(stmt)
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, messages TO "{app}"')


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("conversations")
