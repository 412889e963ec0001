"""ORM models. Every tenant-scoped table carries `tenant_id` and is protected by FORCE'd
row-level security (see core/db/rls.py and the migrations).

One module on purpose (about 550 lines): the tables share one declarative base and reference each
other by foreign key, and the migrations are checked against this one schema; splitting it by
aggregate would scatter a schema that is read as a whole."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The vocabularies are defined once, in core.enums, and re-exported here next to the tables using them.
# Re-exported: callers import the enums with the models.
from core.enums import TIERS as TIERS
from core.enums import DocumentStatus as DocumentStatus
from core.enums import ReviewStatus as ReviewStatus
from core.enums import Role as Role
from core.enums import Tier as Tier
from core.enums import sql_in as sql_in

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2, the embedded default model


class Base(DeclarativeBase):
    pass


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=sa.text("gen_random_uuid()"))


def _now() -> Mapped[dt.datetime]:
    return mapped_column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _tenant_fk() -> Mapped[uuid.UUID]:
    return mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(sa.Text, nullable=False, unique=True)
    display_name: Mapped[str | None] = mapped_column(sa.Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "username", name="uq_users_tenant_username"),
        sa.CheckConstraint(sql_in("role", Role), name="ck_users_role"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    username: Mapped[str] = mapped_column(sa.Text, nullable=False)
    email: Mapped[str | None] = mapped_column(sa.Text)
    display_name: Mapped[str | None] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text, nullable=False, default=Role.viewer.value)
    groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    password_hash: Mapped[str | None] = mapped_column(sa.Text)
    totp_secret: Mapped[str | None] = mapped_column(sa.Text)
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)  # time step of the last accepted code
    failed_logins: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    locked_until: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, server_default=sa.true())
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    # Tenant administration (0016): admin-granted permissions (core.enums.Permission), where the account
    # comes from (local | oidc | saml), and a version every token must carry (bumped to end all sessions).
    permissions: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    source: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="local")
    token_version: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    deactivated_by: Mapped[str | None] = mapped_column(sa.Text)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class ApiKey(Base):
    """An integration's credential (0016): only the SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.CheckConstraint(sql_in("role", Role), name="ck_api_keys_role"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    name: Mapped[str] = mapped_column(sa.Text, nullable=False)
    prefix: Mapped[str] = mapped_column(sa.Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(sa.Text, nullable=False, unique=True)
    role: Mapped[str] = mapped_column(sa.Text, nullable=False)
    groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    allowed_prefixes: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False,
                                                        server_default=sa.text("'{}'"))
    expires_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(sa.Text)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[dt.datetime] = _now()


class SamlAssertion(Base):
    """SAML assertion ids already consumed (0016), kept until they expire: a replay is refused."""

    __tablename__ = "saml_assertions"
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    assertion_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    issuer: Mapped[str] = mapped_column(sa.Text, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    created_at: Mapped[dt.datetime] = _now()


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "source_key", name="uq_documents_tenant_source"),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_documents_classification"),
        sa.CheckConstraint(sql_in("status", DocumentStatus), name="ck_documents_status"),
        sa.CheckConstraint(f"review_status IS NULL OR {sql_in('review_status', ReviewStatus)}",
                           name="ck_documents_review_status"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    source_key: Mapped[str] = mapped_column(sa.Text, nullable=False)  # upload name or inbox path
    source: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="upload")
    title: Mapped[str] = mapped_column(sa.Text, nullable=False)
    filename: Mapped[str] = mapped_column(sa.Text, nullable=False)
    mime_type: Mapped[str | None] = mapped_column(sa.Text)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default="0")
    content_hash: Mapped[str] = mapped_column(sa.Text, nullable=False)
    storage_path: Mapped[str] = mapped_column(sa.Text, nullable=False)
    declared_classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, server_default="2")
    classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, server_default="2")
    classification_reasons: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    acl_groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    status: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default=DocumentStatus.queued.value)
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    chunk_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    index_version: Mapped[int | None] = mapped_column(sa.Integer)
    indexed_hash: Mapped[str | None] = mapped_column(sa.Text)  # content hash of the chunks now serving
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'"))
    queued_at: Mapped[dt.datetime] = _now()
    format: Mapped[str | None] = mapped_column(sa.Text)
    review_status: Mapped[str | None] = mapped_column(sa.Text)
    reviewed_by: Mapped[str | None] = mapped_column(sa.Text)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    review_reason: Mapped[str | None] = mapped_column(sa.Text)
    reviewed_hash: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    # Ingestion recovery (0015): the Dagster run holding the document, its last heartbeat, and how
    # many runs died on the version `ingest_attempts_hash`.
    ingest_run_id: Mapped[str | None] = mapped_column(sa.Text)
    ingest_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ingest_attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    ingest_attempts_hash: Mapped[str | None] = mapped_column(sa.Text)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_chunks_classification"),
        sa.Index("ix_chunks_tenant_generation_document", "tenant_id", "generation", "document_id"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    ordinal: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    text: Mapped[str] = mapped_column(sa.Text, nullable=False)
    page: Mapped[int | None] = mapped_column(sa.Integer)
    section: Mapped[str | None] = mapped_column(sa.Text)
    classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False)
    acl_groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    content_hash: Mapped[str] = mapped_column(sa.Text, nullable=False)
    token_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    # Untyped vector: the dimension is per embedding model (see migration 0002's partial indexes).
    embedding: Mapped[list[float] | None] = mapped_column(Vector())
    embedding_model: Mapped[str | None] = mapped_column(sa.Text)
    embedding_dim: Mapped[int | None] = mapped_column(sa.Integer)
    lexical_len: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    index_version: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="1")
    # The tenant's index generation this chunk belongs to (see IndexVersion).
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="1")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'"))
    created_at: Mapped[dt.datetime] = _now()


class AuditEvent(Base):
    """Append-only, hash-chained per tenant (see compliance/audit/). UPDATE/DELETE are refused by a
    trigger and not granted to the application role."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_tenant_seq", "tenant_id", "seq"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    seq: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True)
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    ts: Mapped[dt.datetime] = _now()
    actor: Mapped[str] = mapped_column(sa.Text, nullable=False)
    actor_role: Mapped[str | None] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text, nullable=False)
    resource_type: Mapped[str | None] = mapped_column(sa.Text)
    resource_id: Mapped[str | None] = mapped_column(sa.Text)
    outcome: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="success")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    prev_hash: Mapped[str | None] = mapped_column(sa.Text)
    hash: Mapped[str] = mapped_column(sa.Text, nullable=False)


class ChunkTerm(Base):
    __tablename__ = "chunk_terms"
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    chunk_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("chunks.id", ondelete="CASCADE"),
                                                primary_key=True)
    term: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    tf: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # Denormalised from the chunk so top postings are read from one index, without a join.
    classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, server_default="1")
    acl_groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    lexical_len: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    impact: Mapped[float] = mapped_column(sa.Float(precision=24), nullable=False, server_default="0")
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="1")


class TermStats(Base):
    __tablename__ = "term_stats"
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    generation: Mapped[int] = mapped_column(sa.Integer, primary_key=True, server_default="1")
    term: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    df: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)


class LexicalStats(Base):
    __tablename__ = "lexical_stats"
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    generation: Mapped[int] = mapped_column(sa.Integer, primary_key=True, server_default="1")
    n_chunks: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default="0")
    total_len: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default="0")


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    title: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[str] = mapped_column(sa.Text, nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    citations: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    model: Mapped[str | None] = mapped_column(sa.Text)
    specialist: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'"))
    index_version: Mapped[int | None] = mapped_column(sa.Integer)  # answers: the search index version used
    access: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # answers: access label of their sources (0013)
    created_at: Mapped[dt.datetime] = _now()


class MESObservation(Base):
    __tablename__ = "mes_observations"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    kind: Mapped[str] = mapped_column(sa.Text, nullable=False)
    source_id: Mapped[str] = mapped_column(sa.Text, nullable=False)
    observed_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    digest: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[dt.datetime] = _now()


class AlertRule(Base):
    __tablename__ = "alert_rules"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    name: Mapped[str] = mapped_column(sa.Text, nullable=False)
    kind: Mapped[str] = mapped_column(sa.Text, nullable=False)
    threshold: Mapped[float] = mapped_column(sa.Float, nullable=False)
    scope: Mapped[str | None] = mapped_column(sa.Text)
    severity: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="warning")
    channels: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, server_default=sa.true())
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    rule_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("alert_rules.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    status: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="open")
    severity: Mapped[str] = mapped_column(sa.Text, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    message: Mapped[str] = mapped_column(sa.Text, nullable=False)
    root_cause: Mapped[str | None] = mapped_column(sa.Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    notify_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    last_notified_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(sa.Text)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(sa.Text)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    opened_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class AlertDelivery(Base):
    __tablename__ = "alert_deliveries"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    alert_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("alerts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(sa.Text, nullable=False)
    target: Mapped[str] = mapped_column(sa.Text, nullable=False)
    status: Mapped[str] = mapped_column(sa.Text, nullable=False)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    created_at: Mapped[dt.datetime] = _now()


class AgentRun(Base):
    __tablename__ = "agent_runs"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    message_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    specialist: Mapped[str] = mapped_column(sa.Text, nullable=False)
    model_tier: Mapped[str] = mapped_column(sa.Text, nullable=False)
    model: Mapped[str] = mapped_column(sa.Text, nullable=False)
    route_confidence: Mapped[float | None] = mapped_column(sa.Float)
    outcome: Mapped[str] = mapped_column(sa.Text, nullable=False)
    escalations: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    trace: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    index_version: Mapped[int | None] = mapped_column(sa.Integer)  # the search index version the answer used
    access: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # access label of what the run saw (0013)
    created_at: Mapped[dt.datetime] = _now()


class UsageRecord(Base):
    __tablename__ = "usage_records"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    agent: Mapped[str] = mapped_column(sa.Text, nullable=False)
    tier: Mapped[str] = mapped_column(sa.Text, nullable=False)
    model: Mapped[str] = mapped_column(sa.Text, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    cost: Mapped[float] = mapped_column(sa.Numeric(14, 6), nullable=False)
    run_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[dt.datetime] = _now()


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (sa.UniqueConstraint("message_id", "user_subject", name="uq_feedback_message_user"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    message_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"))
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    rating: Mapped[str] = mapped_column(sa.Text, nullable=False)
    value: Mapped[float] = mapped_column(sa.Float, nullable=False)
    comment: Mapped[str | None] = mapped_column(sa.Text)
    cited: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class SourceBoost(Base):
    __tablename__ = "source_boosts"
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    index_version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.Text, primary_key=True)  # chunk | document
    document_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    content_hash: Mapped[str] = mapped_column(sa.Text, primary_key=True, server_default="")  # chunk boosts
    boost: Mapped[float] = mapped_column(sa.Float, nullable=False)
    votes: Mapped[float] = mapped_column(sa.Float, nullable=False)
    updated_at: Mapped[dt.datetime] = _now()


class EvalRun(Base):
    __tablename__ = "eval_runs"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    dataset_version: Mapped[str] = mapped_column(sa.Text, nullable=False)
    overall: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    per_specialist: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    per_question: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    regressions: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    report_path: Mapped[str | None] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="nightly")  # nightly | gate
    index_version: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = _now()


class GoldenDataset(Base):
    """One version of a tenant's golden dataset (questions with expected sources and facts) that its nightly
    evaluation and its index promotion gate run on; the newest version is the one in use."""

    __tablename__ = "golden_datasets"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "version", name="uq_golden_datasets_tenant_version"),
                      sa.CheckConstraint("questions > 0", name="ck_golden_datasets_questions"))
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    label: Mapped[str] = mapped_column(sa.Text, nullable=False)
    content: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    questions: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(sa.Text, nullable=False)
    uploaded_by: Mapped[str] = mapped_column(sa.Text, nullable=False)
    source: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[dt.datetime] = _now()


class IndexVersion(Base):
    """One version of a tenant's search index: a chunk generation plus a boost set. Exactly one is
    `active` (the pointer); a rebuild or boost refresh is a `candidate` until the golden-eval gate
    promotes it (atomic flip) or rejects it (the active version keeps serving)."""

    __tablename__ = "index_versions"
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                                                 primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    chunk_generation: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    status: Mapped[str] = mapped_column(sa.Text, nullable=False)
    kind: Mapped[str] = mapped_column(sa.Text, nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = _now()
    decided_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Memory(Base):
    """What the platform remembers about one user (agents/memory.py). `classification`/`acl_groups`
    carry the access label of the documents a memory was derived from; recall filters on them exactly
    like retrieval filters chunks."""

    __tablename__ = "memories"
    __table_args__ = (
        sa.CheckConstraint("memory_type IN ('FACT','PREFERENCE','SKILL','CONTEXT','EPISODIC')",
                           name="ck_memories_type"),
        sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_memories_classification"),
        sa.Index("ix_memories_tenant_user", "tenant_id", "user_subject", "memory_type"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    memory_type: Mapped[str] = mapped_column(sa.Text, nullable=False)
    key: Mapped[str | None] = mapped_column(sa.Text)  # e.g. "answer_length": a newer value replaces the older
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    embedding: Mapped[list[float] | None] = mapped_column(Vector())
    embedding_dim: Mapped[int | None] = mapped_column(sa.Integer)
    importance: Mapped[float] = mapped_column(sa.Float, nullable=False)
    access_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    merged_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="1")
    classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, server_default="1")
    acl_groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    sources: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    origin: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="conversation")
    message_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    last_accessed_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    decayed_at: Mapped[dt.datetime] = _now()


class UserGoal(Base):
    __tablename__ = "user_goals"
    __table_args__ = (
        sa.CheckConstraint("status IN ('active','done','abandoned')", name="ck_user_goals_status"),
        sa.Index("ix_user_goals_tenant_user", "tenant_id", "user_subject", "status"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    text: Mapped[str] = mapped_column(sa.Text, nullable=False)
    status: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="active")
    progress: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    embedding: Mapped[list[float] | None] = mapped_column(Vector())
    embedding_dim: Mapped[int | None] = mapped_column(sa.Integer)
    origin: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="api")
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    closed_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class GoalPlan(Base):
    __tablename__ = "goal_plans"
    __table_args__ = (sa.CheckConstraint("classification BETWEEN 1 AND 4", name="ck_goal_plans_classification"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    goal_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, sa.ForeignKey("user_goals.id", ondelete="CASCADE"),
                                               nullable=False, index=True)
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    request: Mapped[str] = mapped_column(sa.Text, nullable=False)
    steps: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)  # the DAG with each step's result
    answer: Mapped[str] = mapped_column(sa.Text, nullable=False)
    citations: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'[]'"))
    classification: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False, server_default="1")
    acl_groups: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'"))
    created_at: Mapped[dt.datetime] = _now()


class AgentLesson(Base):
    """LEARN: which specialist and approach answered what, and whether it worked (feedback decides)."""

    __tablename__ = "agent_lessons"
    __table_args__ = (sa.Index("ix_agent_lessons_tenant_user", "tenant_id", "user_subject", "specialist"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    user_subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    message_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, unique=True)
    specialist: Mapped[str] = mapped_column(sa.Text, nullable=False)
    approach: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=sa.text("'{}'"))
    outcome: Mapped[str] = mapped_column(sa.Text, nullable=False)
    worked: Mapped[bool | None] = mapped_column(sa.Boolean)  # unknown until the user rates the answer
    feedback_value: Mapped[float | None] = mapped_column(sa.Float)
    question_embedding: Mapped[list[float] | None] = mapped_column(Vector())
    embedding_dim: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
