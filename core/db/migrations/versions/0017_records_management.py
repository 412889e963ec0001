"""records management (issue 15, items 1-3): a keyed audit chain, retention schedules with destruction
holds, and persisted GDPR requests.

- audit_events gains `key_id` and `mac`: a keyed MAC (HMAC-SHA256, key held outside the database, see
  compliance/audit.py) chained over the rows of each tenant's chain. `audit_append` still writes the
  unkeyed row under the chain's advisory lock and now also returns the previous row's MAC and the stored
  details; `audit_seal(id, key_id, mac)` (SECURITY DEFINER) sets the MAC of the chain's head once, in
  the same transaction, while that lock is still held. The append-only trigger lets exactly three
  changes through, each only inside its SECURITY DEFINER function (a transaction-local flag names the row):
  sealing an unsealed row (MAC columns only), pseudonymising a row's actor/resource/details for a GDPR
  erasure (`audit_redact`, markers `erased:<ref>` only), and deleting the oldest rows of a chain past their
  retention (`audit_purge`, after the caller wrote a keyed anchor into `audit_anchors`).
  `audit_redact` and `audit_purge` are for the pipeline's identity only (the Dagster processes), like the
  decision events of 0012.
- audit_anchors: where a purged chain now starts (the last purged row's seq, hash and MAC, signed with
  the audit key). Append-only.
- retention_policies: per-tenant retention periods (the defaults and legal minimums are in code).
- destruction_holds: holds on a tenant, user, document or conversation; released, never deleted.
- gdpr_requests: access / erasure / portability requests and their states, due 30 days after receipt.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import roles, secure_tenant_tables, tenant_fk, timestamp, uuid_pk
from core.db.rls import tenant_rls_sql
from core.settings import get_settings

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

APPEND_ARGS = "uuid, text, text, text, text, text, text, jsonb"
ROW_COLUMNS = ("id", "seq", "tenant_id", "ts", "actor", "actor_role", "action", "resource_type", "resource_id",
               "outcome", "details", "prev_hash", "hash", "hash_alg")


def _same(columns: tuple[str, ...]) -> str:
    cols = ", ".join(columns)
    return f"ROW(NEW.{cols.replace(', ', ', NEW.')}) IS NOT DISTINCT FROM ROW(OLD.{cols.replace(', ', ', OLD.')})"


_KEPT_BY_REDACT = tuple(c for c in ROW_COLUMNS if c not in ("actor", "resource_id", "details")) + ("key_id", "mac")

GUARD_FN = f"""
CREATE OR REPLACE FUNCTION eap_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND current_setting('eap.audit_seal', true) = OLD.id::text AND OLD.mac IS NULL
     AND NEW.mac IS NOT NULL AND NEW.key_id IS NOT NULL AND {_same(ROW_COLUMNS)} THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'UPDATE' AND current_setting('eap.audit_redact', true) = OLD.id::text AND {_same(_KEPT_BY_REDACT)}
     AND (NEW.actor = OLD.actor OR NEW.actor LIKE 'erased:%')
     AND (NEW.resource_id IS NOT DISTINCT FROM OLD.resource_id OR NEW.resource_id LIKE 'erased:%')
     AND (NEW.details = OLD.details OR (NEW.details ? 'erased' AND jsonb_typeof(NEW.details -> 'erased') = 'string'
                                        AND (SELECT count(*) FROM jsonb_object_keys(NEW.details)) = 1)) THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' AND current_setting('eap.audit_purge_chain', true) = coalesce(OLD.tenant_id::text, 'platform')
     AND OLD.seq <= nullif(current_setting('eap.audit_purge_upto', true), '')::bigint THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$
"""


def _append_fn(owner: str, system: str) -> str:
    """0012's writer, unchanged in what it checks and writes; it also returns the previous row's MAC and the
    details as stored, which the caller needs to seal the new row (compliance/audit.py)."""
    return f"""
CREATE FUNCTION audit_append(p_tenant uuid, p_actor text, p_action text, p_actor_role text,
    p_resource_type text, p_resource_id text, p_outcome text, p_details jsonb)
RETURNS TABLE (id uuid, seq bigint, ts timestamptz, prev_hash text, hash text, prev_mac text, details jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  v_id uuid := gen_random_uuid();
  v_ts timestamptz := clock_timestamp();
  v_prev text;
  v_prev_mac text;
  v_hash text;
  v_seq bigint;
  v_details jsonb := coalesce(p_details, '{{}}'::jsonb);
BEGIN
  IF NOT pg_has_role(session_user, '{owner}', 'MEMBER')
     AND p_tenant IS DISTINCT FROM eap_current_tenant() THEN
    RAISE EXCEPTION 'audit_append: tenant % is not this session''s tenant', p_tenant
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (p_action LIKE 'document.review.%' OR p_action LIKE 'dataset.export.%')
     AND (NOT pg_has_role(session_user, '{owner}', 'MEMBER') OR session_user = '{system}') THEN
    RAISE EXCEPTION 'audit_append: % is recorded by the platform after verifying an approval', p_action
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_actor IS NULL OR p_action IS NULL THEN
    RAISE EXCEPTION 'audit_append: actor and action are required' USING ERRCODE = 'not_null_violation';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_tenant::text, 'platform'), 0));
  IF p_tenant IS NULL THEN
    SELECT a.hash, a.mac INTO v_prev, v_prev_mac FROM audit_events a WHERE a.tenant_id IS NULL
      ORDER BY a.seq DESC LIMIT 1;
  ELSE
    SELECT a.hash, a.mac INTO v_prev, v_prev_mac FROM audit_events a WHERE a.tenant_id = p_tenant
      ORDER BY a.seq DESC LIMIT 1;
  END IF;
  v_hash := eap_audit_digest(v_prev, v_id, p_tenant, v_ts, p_actor, p_actor_role, p_action, p_resource_type,
                             p_resource_id, coalesce(p_outcome, 'success'), v_details);
  INSERT INTO audit_events AS a (id, tenant_id, ts, actor, actor_role, action, resource_type, resource_id, outcome,
                                 details, prev_hash, hash, hash_alg)
  VALUES (v_id, p_tenant, v_ts, p_actor, p_actor_role, p_action, p_resource_type, p_resource_id,
          coalesce(p_outcome, 'success'), v_details, v_prev, v_hash, 2)
  RETURNING a.seq INTO v_seq;
  RETURN QUERY SELECT v_id, v_seq, v_ts, v_prev, v_hash, v_prev_mac, v_details;
END $$
"""


def _seal_fn(owner: str) -> str:
    return f"""
CREATE FUNCTION audit_seal(p_id uuid, p_key_id text, p_mac text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  r audit_events%ROWTYPE;
BEGIN
  SELECT * INTO r FROM audit_events a WHERE a.id = p_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'audit_seal: no event %', p_id USING ERRCODE = 'no_data_found';
  END IF;
  IF NOT pg_has_role(session_user, '{owner}', 'MEMBER') AND r.tenant_id IS DISTINCT FROM eap_current_tenant() THEN
    RAISE EXCEPTION 'audit_seal: event % is not in this session''s tenant', p_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF r.mac IS NOT NULL THEN
    RAISE EXCEPTION 'audit_seal: event % is sealed already', p_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_mac IS NULL OR p_key_id IS NULL THEN
    RAISE EXCEPTION 'audit_seal: key id and MAC are required' USING ERRCODE = 'not_null_violation';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(r.tenant_id::text, 'platform'), 0));
  IF EXISTS (SELECT 1 FROM audit_events a WHERE a.tenant_id IS NOT DISTINCT FROM r.tenant_id AND a.seq > r.seq) THEN
    RAISE EXCEPTION 'audit_seal: event % is not the head of its chain', p_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('eap.audit_seal', p_id::text, true);
  UPDATE audit_events a SET key_id = p_key_id, mac = p_mac WHERE a.id = p_id;
  PERFORM set_config('eap.audit_seal', '', true);
END $$
"""


def _pipeline_only(owner: str, system: str, name: str) -> str:
    return f"""
  IF NOT pg_has_role(session_user, '{owner}', 'MEMBER') OR session_user = '{system}' THEN
    RAISE EXCEPTION '{name}: only the pipeline identity may call this' USING ERRCODE = 'insufficient_privilege';
  END IF;"""


def _redact_fn(owner: str, system: str) -> str:
    return f"""
CREATE FUNCTION audit_redact(p_id uuid, p_actor text, p_resource_id text, p_details jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN{_pipeline_only(owner, system, 'audit_redact')}
  PERFORM set_config('eap.audit_redact', p_id::text, true);
  UPDATE audit_events a SET actor = p_actor, resource_id = p_resource_id, details = p_details WHERE a.id = p_id;
  PERFORM set_config('eap.audit_redact', '', true);
END $$
"""


def _purge_fn(owner: str, system: str) -> str:
    return f"""
CREATE FUNCTION audit_purge(p_tenant uuid, p_upto_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  v_n bigint;
BEGIN{_pipeline_only(owner, system, 'audit_purge')}
  IF NOT EXISTS (SELECT 1 FROM audit_anchors x WHERE x.tenant_id IS NOT DISTINCT FROM p_tenant
                 AND x.seq = p_upto_seq) THEN
    RAISE EXCEPTION 'audit_purge: write the anchor at seq % first', p_upto_seq USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_tenant::text, 'platform'), 0));
  IF NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.tenant_id IS NOT DISTINCT FROM p_tenant
                 AND a.seq > p_upto_seq) THEN
    RAISE EXCEPTION 'audit_purge: the head of a chain is never purged' USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('eap.audit_purge_chain', coalesce(p_tenant::text, 'platform'), true);
  PERFORM set_config('eap.audit_purge_upto', p_upto_seq::text, true);
  DELETE FROM audit_events a WHERE a.tenant_id IS NOT DISTINCT FROM p_tenant AND a.seq <= p_upto_seq;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  PERFORM set_config('eap.audit_purge_chain', '', true);
  PERFORM set_config('eap.audit_purge_upto', '', true);
  RETURN v_n;
END $$
"""


ANCHORS_APPEND_ONLY = """
CREATE FUNCTION eap_audit_anchors_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_anchors is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$
"""


def _system_role() -> str:
    return str(context.config.attributes.get("system_role") or get_settings().system_db_role)


def upgrade() -> None:
    app, owner = roles()
    system = _system_role()
    op.add_column("audit_events", sa.Column("key_id", sa.Text))
    op.add_column("audit_events", sa.Column("mac", sa.Text))
    op.create_table(
        "audit_anchors",
        uuid_pk(),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id", ondelete="CASCADE")),  # NULL: platform chain
        sa.Column("seq", sa.BigInteger, nullable=False),  # the last purged row
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("mac", sa.Text),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("purged", sa.BigInteger, nullable=False),
        sa.Column("sig", sa.Text, nullable=False),
        timestamp(),
    )
    op.create_index("ix_audit_anchors_chain", "audit_anchors", ["tenant_id", "seq"])
    op.execute(ANCHORS_APPEND_ONLY)
    op.execute("CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors "
               "FOR EACH ROW EXECUTE FUNCTION eap_audit_anchors_append_only()")
    for stmt in tenant_rls_sql("audit_anchors", app_role=app, owner_role=owner):
        op.execute(stmt)
    op.execute(f'GRANT SELECT ON audit_anchors TO "{app}"')

    op.execute(GUARD_FN)
    op.execute(f"DROP FUNCTION audit_append({APPEND_ARGS})")
    op.execute(_append_fn(owner, system))
    op.execute(_seal_fn(owner))
    op.execute(_redact_fn(owner, system))
    op.execute(_purge_fn(owner, system))
    for fn in (f"audit_append({APPEND_ARGS})", "audit_seal(uuid, text, text)",
               "audit_redact(uuid, text, text, jsonb)", "audit_purge(uuid, bigint)"):
        op.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION audit_append({APPEND_ARGS}) TO "{app}"')
    op.execute(f'GRANT EXECUTE ON FUNCTION audit_seal(uuid, text, text) TO "{app}"')

    op.create_table(
        "retention_policies",
        tenant_fk(),
        sa.Column("record_type", sa.Text, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "record_type", name="pk_retention_policies"),
        sa.CheckConstraint("days > 0", name="ck_retention_days"),
    )
    op.create_table(
        "destruction_holds",
        uuid_pk(),
        tenant_fk(),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("placed_by", sa.Text, nullable=False),
        timestamp("placed_at"),
        sa.Column("released_by", sa.Text),
        sa.Column("released_at", sa.DateTime(timezone=True)),
        sa.Column("release_reason", sa.Text),
        sa.CheckConstraint("scope IN ('tenant','user','document','conversation')", name="ck_holds_scope"),
    )
    op.create_index("ix_destruction_holds_tenant_active", "destruction_holds", ["tenant_id", "scope", "target"],
                    postgresql_where=sa.text("released_at IS NULL"))
    op.create_table(
        "gdpr_requests",
        uuid_pk(),
        tenant_fk(),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="received"),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_by_role", sa.Text),
        sa.Column("on_behalf", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text),
        timestamp("received_at"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("result", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("export_dir", sa.Text),
        sa.CheckConstraint("kind IN ('access','erasure','portability')", name="ck_gdpr_kind"),
        sa.CheckConstraint("status IN ('received','processing','completed','refused','failed')",
                           name="ck_gdpr_status"),
    )
    op.create_index("ix_gdpr_requests_open", "gdpr_requests", ["status", "received_at"],
                    postgresql_where=sa.text("status IN ('received','processing')"))
    secure_tenant_tables({"retention_policies": "SELECT, INSERT, UPDATE, DELETE",
                          "destruction_holds": "SELECT, INSERT, UPDATE", "gdpr_requests": "SELECT, INSERT"})


def _load_0012() -> ModuleType:
    path = next(Path(__file__).parent.glob("0012_*.py"))
    spec = importlib.util.spec_from_file_location("eap_migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    app, owner = roles()
    op.drop_table("gdpr_requests")
    op.drop_table("destruction_holds")
    op.drop_table("retention_policies")
    for fn in ("audit_purge(uuid, bigint)", "audit_redact(uuid, text, text, jsonb)", "audit_seal(uuid, text, text)",
               f"audit_append({APPEND_ARGS})"):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    m0012 = _load_0012()
    op.execute(m0012._append_fn(owner, _system_role()))
    op.execute(f"REVOKE ALL ON FUNCTION audit_append({APPEND_ARGS}) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION audit_append({APPEND_ARGS}) TO "{app}"')
    op.execute("""
        CREATE OR REPLACE FUNCTION eap_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$
        """)
    op.drop_table("audit_anchors")
    op.execute("DROP FUNCTION IF EXISTS eap_audit_anchors_append_only()")
    # Sealed rows keep their unkeyed hash (hash_alg 2) and still verify under 0012's rules once the MAC columns
    # are gone; rows pseudonymised by a GDPR erasure do not (their unkeyed hash covered the original actor).
    op.drop_column("audit_events", "mac")
    op.drop_column("audit_events", "key_id")
