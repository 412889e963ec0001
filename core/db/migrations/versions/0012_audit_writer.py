"""audit writer (security issue 12): one privileged append path for the audit log, and the
single-use approval tokens that bind a steward decision or a dataset export to an authenticated user.

- The application role loses INSERT on audit_events. `audit_append(...)` (SECURITY DEFINER, owned by
  the owner role) is the only way in: it takes the per-chain lock, reads the previous hash, stamps
  the time and computes the row hash itself, so a caller chooses none of id/ts/prev_hash/hash/seq.
  Called by any login that is not the owner role (the application role) it also refuses a tenant
  other than the session's (`eap.tenant_id`) and the decision events only a verified approval may produce
  (`document.review.*`, `dataset.export.*`): those are written only by the pipeline's identity (the
  Dagster processes, after verifying and consuming the approval token) — not by the application role
  and not by the API's system role either.
- Rows appended this way carry hash_alg = 2 (hash computed in SQL by `eap_audit_digest`); older rows
  keep hash_alg = 1 (hash computed in Python) and still verify.
- tenant_id becomes nullable: the platform chain (tenant NULL) records denials that no tenant can be
  attached to (a request without valid credentials). Only the owner role can read it (RLS).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import context, op

from core.db.migrations.helpers import roles, secure_tenant_tables, tenant_fk, timestamp
from core.settings import get_settings

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PRIVILEGED_ACTIONS = ("document.review.%", "dataset.export.%")
APPEND_ARGS = "uuid, text, text, text, text, text, text, jsonb"

DIGEST_FN = """
CREATE OR REPLACE FUNCTION eap_audit_digest(p_prev text, p_id uuid, p_tenant uuid, p_ts timestamptz, p_actor text,
    p_actor_role text, p_action text, p_resource_type text, p_resource_id text, p_outcome text, p_details jsonb)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
  SELECT encode(sha256(convert_to(coalesce(p_prev, '') || '|' || jsonb_build_object(
      'id', p_id::text, 'tenant_id', p_tenant::text,
      'ts', to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      'actor', p_actor, 'actor_role', p_actor_role, 'action', p_action, 'resource_type', p_resource_type,
      'resource_id', p_resource_id, 'outcome', p_outcome, 'details', coalesce(p_details, '{}'::jsonb))::text,
    'UTF8')), 'hex')
$$
"""


def _append_fn(owner: str, system: str) -> str:
    privileged = " OR ".join(f"p_action LIKE '{p}'" for p in PRIVILEGED_ACTIONS)
    return f"""
CREATE OR REPLACE FUNCTION audit_append(p_tenant uuid, p_actor text, p_action text, p_actor_role text,
    p_resource_type text, p_resource_id text, p_outcome text, p_details jsonb)
RETURNS TABLE (id uuid, seq bigint, ts timestamptz, prev_hash text, hash text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  v_id uuid := gen_random_uuid();
  v_ts timestamptz := clock_timestamp();
  v_prev text;
  v_hash text;
  v_seq bigint;
BEGIN
  -- Whoever is not the owner role (or a superuser) is the application: default deny.
  IF NOT pg_has_role(session_user, '{owner}', 'MEMBER')
     AND p_tenant IS DISTINCT FROM eap_current_tenant() THEN
    RAISE EXCEPTION 'audit_append: tenant % is not this session''s tenant', p_tenant
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- Decision events come from the pipeline's identity only (the Dagster processes, which verified and
  -- consumed an approval token): neither the application role nor the API's system role.
  IF ({privileged}) AND (NOT pg_has_role(session_user, '{owner}', 'MEMBER') OR session_user = '{system}') THEN
    RAISE EXCEPTION 'audit_append: % is recorded by the platform after verifying an approval', p_action
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_actor IS NULL OR p_action IS NULL THEN
    RAISE EXCEPTION 'audit_append: actor and action are required' USING ERRCODE = 'not_null_violation';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_tenant::text, 'platform'), 0));
  IF p_tenant IS NULL THEN
    SELECT a.hash INTO v_prev FROM audit_events a WHERE a.tenant_id IS NULL ORDER BY a.seq DESC LIMIT 1;
  ELSE
    SELECT a.hash INTO v_prev FROM audit_events a WHERE a.tenant_id = p_tenant ORDER BY a.seq DESC LIMIT 1;
  END IF;
  v_hash := eap_audit_digest(v_prev, v_id, p_tenant, v_ts, p_actor, p_actor_role, p_action, p_resource_type,
                             p_resource_id, coalesce(p_outcome, 'success'), coalesce(p_details, '{{}}'::jsonb));
  INSERT INTO audit_events AS a (id, tenant_id, ts, actor, actor_role, action, resource_type, resource_id, outcome,
                                 details, prev_hash, hash, hash_alg)
  VALUES (v_id, p_tenant, v_ts, p_actor, p_actor_role, p_action, p_resource_type, p_resource_id,
          coalesce(p_outcome, 'success'), coalesce(p_details, '{{}}'::jsonb), v_prev, v_hash, 2)
  RETURNING a.seq INTO v_seq;
  RETURN QUERY SELECT v_id, v_seq, v_ts, v_prev, v_hash;
END $$
"""


def upgrade() -> None:
    app, owner = roles()
    op.execute("ALTER TABLE audit_events ALTER COLUMN tenant_id DROP NOT NULL")
    op.execute("ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS hash_alg smallint NOT NULL DEFAULT 1")
    op.execute("CREATE INDEX IF NOT EXISTS ix_audit_platform_seq ON audit_events (seq) WHERE tenant_id IS NULL")
    op.execute(DIGEST_FN)
    system = context.config.attributes.get("system_role") or get_settings().system_db_role
    op.execute(_append_fn(owner, system))
    op.execute(f"REVOKE ALL ON FUNCTION audit_append({APPEND_ARGS}) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION audit_append({APPEND_ARGS}) TO "{app}"')
    op.execute(f'REVOKE INSERT ON audit_events FROM "{app}"')

    # One row per approval token the API issued: the run that presents the token consumes it (the
    # system identity sets used_at); the application role can issue and read, never consume.
    op.create_table(
        "approval_tokens",
        sa.Column("id", sa.Uuid, primary_key=True),  # the token's jti
        tenant_fk(),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("subject_role", sa.Text, nullable=False),
        sa.Column("document_id", sa.Uuid, sa.ForeignKey("documents.id", ondelete="CASCADE")),
        sa.Column("content_hash", sa.Text),
        sa.Column("decision", sa.Text),
        sa.Column("reason_sha256", sa.Text, nullable=False),
        timestamp("issued_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("used_by_run", sa.Text),
        sa.CheckConstraint("kind IN ('document_review', 'finetune_export')", name="ck_approval_tokens_kind"),
        sa.CheckConstraint("decision IS NULL OR decision IN ('approve', 'reject')", name="ck_approval_tokens_decision"),
    )
    op.create_index("ix_approval_tokens_tenant_id", "approval_tokens", ["tenant_id"])
    secure_tenant_tables({"approval_tokens": "SELECT, INSERT"})


def downgrade() -> None:
    app, _owner = roles()
    op.drop_table("approval_tokens")
    op.execute(f'GRANT INSERT ON audit_events TO "{app}"')
    op.execute(f"DROP FUNCTION IF EXISTS audit_append({APPEND_ARGS})")
    op.execute("DROP FUNCTION IF EXISTS eap_audit_digest(text, uuid, uuid, timestamptz, text, text, text, text, "
               "text, text, jsonb)")
    # hash_alg and the platform-chain index stay: rows appended by the SQL writer keep verifying after a
    # re-upgrade, and the older code's inserts take the column's default (1, its Python hash). The
    # platform chain's rows (tenant NULL) keep the column nullable if there are any.
    op.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM audit_events WHERE tenant_id IS NULL) THEN "
               "ALTER TABLE audit_events ALTER COLUMN tenant_id SET NOT NULL; END IF; END $$")
