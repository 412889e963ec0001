"""intelligence loop: per-user memories (pgvector), persistent goals with their plans, agent lessons

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Recall is an exact scan over one user's memories (a hard per-user limit keeps that small), so the
    # btree on (tenant, user) is the index; an HNSW index would filter after its scan and lose rows.
    op.create_table(
        "memories",
        uuid_pk(),
        tenant_fk(),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("memory_type", sa.Text, nullable=False),
        sa.Column("key", sa.Text),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("embedding", Vector()),
        sa.Column("embedding_dim", sa.Integer),
        sa.Column("importance", sa.Float, nullable=False),
        sa.Column("access_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("merged_count", sa.Integer, nullable=False, server_default="1"),
        # Access label of the documents the memory was derived from (same rule as chunks).
        sa.Column("classification", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("acl_groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("sources", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("origin", sa.Text, nullable=False, server_default="conversation"),
        sa.Column("message_id", sa.Uuid),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'")),
        timestamp(),
        timestamp("updated_at"),
        sa.Column("last_accessed_at", sa.DateTime(timezone=True)),
        timestamp("decayed_at"),
        sa.CheckConstraint("memory_type IN ('FACT','PREFERENCE','SKILL','CONTEXT','EPISODIC')",
                           name="ck_memories_type"),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_memories_classification"),
    )
    op.create_index("ix_memories_tenant_user", "memories", ["tenant_id", "user_subject", "memory_type"])
    # One value per preference key and user ("answer_length", "language", ...): a new statement replaces it.
    op.create_index("uq_memories_user_key", "memories", ["tenant_id", "user_subject", "memory_type", "key"],
                    unique=True, postgresql_where=sa.text("key IS NOT NULL"))

    op.create_table(
        "user_goals",
        uuid_pk(),
        tenant_fk(),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("progress", JSONB, nullable=False, server_default=sa.text("'[]'")),  # [{at, note, ...}]
        sa.Column("embedding", Vector()),
        sa.Column("embedding_dim", sa.Integer),
        sa.Column("origin", sa.Text, nullable=False, server_default="api"),  # api | conversation
        timestamp(),
        timestamp("updated_at"),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('active','done','abandoned')", name="ck_user_goals_status"),
    )
    op.create_index("ix_user_goals_tenant_user", "user_goals", ["tenant_id", "user_subject", "status"])

    op.create_table(
        "goal_plans",
        uuid_pk(),
        tenant_fk(),
        sa.Column("goal_id", sa.Uuid, sa.ForeignKey("user_goals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("steps", JSONB, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("citations", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("classification", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("acl_groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        timestamp(),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_goal_plans_classification"),
    )
    op.create_index("ix_goal_plans_goal_id", "goal_plans", ["goal_id"])

    op.create_table(
        "agent_lessons",
        uuid_pk(),
        tenant_fk(),
        sa.Column("user_subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.Uuid, unique=True),
        sa.Column("specialist", sa.Text, nullable=False),
        sa.Column("approach", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("worked", sa.Boolean),
        sa.Column("feedback_value", sa.Float),
        sa.Column("question_embedding", Vector()),
        sa.Column("embedding_dim", sa.Integer),
        timestamp(),
        timestamp("updated_at"),
    )
    op.create_index("ix_agent_lessons_tenant_user", "agent_lessons", ["tenant_id", "user_subject", "specialist"])
    secure_tenant_tables({"memories": CRUD, "user_goals": "SELECT, INSERT, UPDATE", "goal_plans": "SELECT, INSERT",
                          "agent_lessons": CRUD})


def downgrade() -> None:
    op.drop_table("agent_lessons")
    op.drop_table("goal_plans")
    op.drop_table("user_goals")
    op.drop_table("memories")
