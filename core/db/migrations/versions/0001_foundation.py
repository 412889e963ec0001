"""foundation: tenants, users, documents, chunks, audit_events with FORCE'd row-level security

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR

from core.db.rls import CURRENT_TENANT_FN, tenant_rls_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UUID_PK: dict[str, Any] = dict(primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _now() -> sa.Column[Any]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _tenant() -> sa.Column[Any]:
    return sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    app = context.config.attributes["app_role"]
    owner = context.config.attributes["owner_role"]
    op.execute(CURRENT_TENANT_FN)

    op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid, **UUID_PK),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("settings", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        _now(),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid, **UUID_PK),
        _tenant(),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("display_name", sa.Text),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("password_hash", sa.Text),
        sa.Column("totp_secret", sa.Text),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        _now(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("tenant_id", "username", name="uq_users_tenant_username"),
        sa.CheckConstraint("role IN ('admin','operator','viewer')", name="ck_users_role"),
    )
    op.create_index("ix_users_tenant_id", "users", ["tenant_id"])

    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid, **UUID_PK),
        _tenant(),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default="upload"),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("mime_type", sa.Text),
        sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("storage_path", sa.Text, nullable=False),
        sa.Column("declared_classification", sa.SmallInteger, nullable=False, server_default="2"),
        sa.Column("classification", sa.SmallInteger, nullable=False, server_default="2"),
        sa.Column("classification_reasons", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("acl_groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("status", sa.Text, nullable=False, server_default="queued"),
        sa.Column("status_reason", sa.Text),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("index_version", sa.Integer),
        sa.Column("indexed_hash", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_by", sa.Text),
        _now(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("tenant_id", "source_key", name="uq_documents_tenant_source"),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_documents_classification"),
        sa.CheckConstraint(
            "status IN ('queued','parsing','awaiting_approval','indexed','rejected','failed')",
            name="ck_documents_status",
        ),
    )
    op.create_index("ix_documents_tenant_id", "documents", ["tenant_id"])
    op.create_index("ix_documents_status", "documents", ["status"])

    op.create_table(
        "chunks",
        sa.Column("id", sa.Uuid, **UUID_PK),
        _tenant(),
        sa.Column("document_id", sa.Uuid, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("section", sa.Text),
        sa.Column("classification", sa.SmallInteger, nullable=False),
        sa.Column("acl_groups", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("embedding", Vector(384)),
        sa.Column("tsv", TSVECTOR),
        sa.Column("index_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'")),
        _now(),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_chunks_classification"),
    )
    op.create_index("ix_chunks_tenant_id", "chunks", ["tenant_id"])
    op.create_index("ix_chunks_tenant_document", "chunks", ["tenant_id", "document_id"])
    op.execute("CREATE INDEX ix_chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
    op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid, **UUID_PK),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        _tenant(),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("actor_role", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("resource_type", sa.Text),
        sa.Column("resource_id", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False, server_default="success"),
        sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("prev_hash", sa.Text),
        sa.Column("hash", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_events_tenant_id", "audit_events", ["tenant_id"])
    op.create_index("ix_audit_tenant_seq", "audit_events", ["tenant_id", "seq"])
    # The audit log is an official record: no UPDATE or DELETE, whoever asks (retention purges
    # arrive with the compliance work as an explicit, audited, owner-only procedure).
    op.execute(
        """
        CREATE FUNCTION eap_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION eap_audit_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION eap_audit_append_only()"
    )

    # Row-level security. `tenants` is scoped by its own id.
    for stmt in tenant_rls_sql("tenants", app_role=app, owner_role=owner, column="id"):
        op.execute(stmt)
    for table in ("users", "documents", "chunks", "audit_events"):
        for stmt in tenant_rls_sql(table, app_role=app, owner_role=owner):
            op.execute(stmt)

    op.execute(f'GRANT USAGE ON SCHEMA public TO "{app}"')
    op.execute(f'GRANT SELECT ON alembic_version TO "{app}"')
    op.execute(f'GRANT SELECT, UPDATE ON tenants TO "{app}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON users, documents, chunks TO "{app}"')
    op.execute(f'GRANT SELECT, INSERT ON audit_events TO "{app}"')
    op.execute(f'GRANT EXECUTE ON FUNCTION eap_current_tenant() TO "{app}"')


def downgrade() -> None:
    for table in ("audit_events", "chunks", "documents", "users", "tenants"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS eap_audit_append_only()")
    op.execute("DROP FUNCTION IF EXISTS eap_current_tenant()")
