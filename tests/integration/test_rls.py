"""Row-level security, tested the way an attacker would probe it: the application role, with
tenant A set, runs statements that carry no tenant filter at all against every tenant-scoped table."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from compliance import audit
from core.db.database import app_engine, system_session, tenant_session
from core.models import (
    AgentLesson,
    AgentRun,
    Alert,
    AlertDelivery,
    AlertRule,
    Chunk,
    ChunkTerm,
    Conversation,
    Document,
    EvalRun,
    Feedback,
    GoalPlan,
    LexicalStats,
    Memory,
    MESObservation,
    Message,
    Role,
    SourceBoost,
    TermStats,
    UsageRecord,
    User,
    UserGoal,
)
from core.settings import get_settings
from identity.tenancy import ensure_user


def _tenant_tables(conn) -> dict[str, str]:
    """Every table with a tenant column (tenants itself is keyed by id)."""
    rows = conn.execute(
        text(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema='public' AND column_name='tenant_id'"
        )
    ).scalars()
    out = {t: "tenant_id" for t in rows}
    out["tenants"] = "id"
    return out


def _seed(tenant) -> None:
    ensure_user(tenant, f"user-{tenant.name}", Role.viewer)
    with tenant_session(tenant.id) as s:
        doc = Document(tenant_id=tenant.id, source_key=f"{tenant.name}.txt", title="t", filename="f.txt",
                       content_hash=hashlib.sha256(tenant.name.encode()).hexdigest(), storage_path="/x")
        s.add(doc)
        s.flush()
        chunk = Chunk(tenant_id=tenant.id, document_id=doc.id, ordinal=0, text=f"secret of {tenant.name}",
                      classification=2, content_hash="h", embedding=[0.1] * 384, embedding_dim=384)
        s.add(chunk)
        s.flush()
        s.add(ChunkTerm(tenant_id=tenant.id, chunk_id=chunk.id, term="secret", tf=1))
        s.add(LexicalStats(tenant_id=tenant.id, n_chunks=1, total_len=3))
        s.add(TermStats(tenant_id=tenant.id, term="secret", df=1))
        s.add(MESObservation(tenant_id=tenant.id, kind="machine_status", source_id="M-1",
                             observed_at=dt.datetime.now(dt.UTC), payload={"t": tenant.name}, digest="d"))
        rule = AlertRule(id=uuid.uuid4(), tenant_id=tenant.id, name="r", kind="downtime_minutes", threshold=30)
        s.add(rule)
        s.flush()
        alert = Alert(id=uuid.uuid4(), tenant_id=tenant.id, rule_id=rule.id, subject="M-1", severity="warning",
                      message=f"alert of {tenant.name}")
        s.add(alert)
        s.flush()
        s.add(AlertDelivery(tenant_id=tenant.id, alert_id=alert.id, channel="webhook", target="x",
                            status="delivered", attempts=1))
        s.add(AgentRun(tenant_id=tenant.id, user_subject="u", specialist="document_analyst", model_tier="LIGHT",
                       model="m", outcome="verified", trace=[{"step": "OBSERVE"}]))
        s.add(UsageRecord(tenant_id=tenant.id, user_subject="u", agent="a", tier="LIGHT", model="m",
                          prompt_tokens=1, completion_tokens=1, cost=0))
        s.add(EvalRun(tenant_id=tenant.id, dataset_version="v", overall={}, per_specialist={}, per_question=[]))
        conv = Conversation(tenant_id=tenant.id, user_subject="u", title="t")
        s.add(conv)
        s.flush()
        msg = Message(tenant_id=tenant.id, conversation_id=conv.id, role="assistant",
                      content=f"answer of {tenant.name}")
        s.add(msg)
        s.flush()
        s.add(Feedback(tenant_id=tenant.id, message_id=msg.id, user_subject="u", rating="up", value=1.0))
        s.add(Memory(tenant_id=tenant.id, user_subject="u", memory_type="FACT", content=f"memory of {tenant.name}",
                     embedding=[0.1] * 384, embedding_dim=384, importance=0.5))
        goal = UserGoal(id=uuid.uuid4(), tenant_id=tenant.id, user_subject="u", text=f"goal of {tenant.name}")
        s.add(goal)
        s.flush()
        s.add(GoalPlan(tenant_id=tenant.id, goal_id=goal.id, user_subject="u", request="r", steps=[], answer="a"))
        s.add(AgentLesson(tenant_id=tenant.id, user_subject="u", specialist="document_analyst", outcome="verified"))
    with system_session() as s:  # boosts are written by the pipeline only (the app role may read them)
        s.add(SourceBoost(tenant_id=tenant.id, index_version=1, kind="chunk", document_id=uuid.uuid4(),
                          content_hash="h", boost=1.2, votes=1))
        audit.record(s, tenant_id=tenant.id, actor="t", action="seed")
        s.execute(text("INSERT INTO approval_tokens (id, tenant_id, kind, subject, subject_role, reason_sha256, "
                       "expires_at) VALUES (gen_random_uuid(), :t, 'finetune_export', 'u', 'admin', 'x', now())"),
                  {"t": str(tenant.id)})
        s.execute(text("INSERT INTO api_keys (tenant_id, name, prefix, key_hash, role, expires_at, created_by) "
                       "VALUES (:t, 'k', 'p', :h, 'viewer', now() + interval '1 day', 'u')"),
                  {"t": str(tenant.id), "h": f"hash-{tenant.id}"})
        s.execute(text("INSERT INTO saml_assertions (tenant_id, assertion_id, issuer, expires_at) "
                       "VALUES (:t, 'id-1', 'idp', now() + interval '1 day')"), {"t": str(tenant.id)})
        op = s.execute(text("INSERT INTO operation_proposals (tenant_id, target, operation, payload, preview, risk, "
                            "required_approvals, proposer, proposer_role, idempotency_key, expires_at) VALUES "
                            "(:t, 'mes', 'create_work_order', '{}', '{}', 'low', 1, 'u', 'operator', 'k', now()) "
                            "RETURNING id"),
                       {"t": str(tenant.id)}).scalar_one()
        s.execute(text("INSERT INTO operation_approvals (tenant_id, proposal_id, approver, approver_role, decision) "
                       "VALUES (:t, :p, 'a', 'operator', 'approve')"), {"t": str(tenant.id), "p": str(op)})
        # Records management (0017): retention policies, holds, GDPR requests, audit anchors.
        s.execute(text("INSERT INTO retention_policies (tenant_id, record_type, days, updated_by) "
                       "VALUES (:t, 'memories', 400, 'u')"), {"t": str(tenant.id)})
        s.execute(text("INSERT INTO destruction_holds (tenant_id, scope, target, reason, placed_by) "
                       "VALUES (:t, 'user', 'u', 'r', 'c')"), {"t": str(tenant.id)})
        s.execute(text("INSERT INTO gdpr_requests (tenant_id, subject, kind, requested_by, due_at) "
                       "VALUES (:t, 'u', 'access', 'u', now())"), {"t": str(tenant.id)})
        s.execute(text("INSERT INTO audit_anchors (tenant_id, seq, hash, key_id, purged, sig) "
                       "VALUES (:t, 0, 'h', 'k', 0, 's')"), {"t": str(tenant.id)})
        # SAP extracts (0018) and golden datasets (0021).
        t = {"t": str(tenant.id)}
        s.execute(text("INSERT INTO sap_stock (tenant_id, extracted_at, material, plant, storage_location, "
                       "stock_type, quantity, unit) VALUES (:t, now(), 'M-1', 'P1', 'S1', 'unrestricted', 1, 'PC')"), t)
        s.execute(text("INSERT INTO sap_materials (tenant_id, extracted_at, material, plant, description, "
                       "product_type, product_group, base_unit, reorder_point, safety_stock) VALUES "
                       "(:t, now(), 'M-1', 'P1', 'd', 'ROH', 'G', 'PC', 1, 1)"), t)
        s.execute(text("INSERT INTO sap_open_po_items (tenant_id, extracted_at, purchase_order, item, supplier, "
                       "supplier_name, material, plant, text, quantity, received, open_quantity, unit, net_price, "
                       "currency, order_date, delivery_date) VALUES (:t, now(), '45', '10', 'S', 'n', 'M-1', 'P1', "
                       "'x', 1, 0, 1, 'PC', 1, 'EUR', now(), now())"), t)
        s.execute(text("INSERT INTO sap_cost_centers (tenant_id, extracted_at, controlling_area, cost_center, name, "
                       "description, category, responsible, currency, planned_costs, actual_costs) VALUES "
                       "(:t, now(), 'A', 'C1', 'n', 'd', 'F', 'r', 'EUR', 1, 1)"), t)
        s.execute(text("INSERT INTO sap_extracts (tenant_id, extracted_at, extract, rows, pages, source, duration_ms) "
                       "VALUES (:t, now(), 'inventory', 1, 1, 'sim', 1)"), t)
        s.execute(text("INSERT INTO golden_datasets (tenant_id, version, label, content, questions, sha256, "
                       "uploaded_by, source) VALUES (:t, 1, 'v1', '{}', 1, 'h', 'u', 'api')"), t)


@pytest.fixture
def two_tenants(make_tenant):
    a, b = make_tenant("a"), make_tenant("b")
    _seed(a)
    _seed(b)
    return a, b


def _counts(tenant_id, tables) -> dict[str, int]:
    with system_session() as s:
        return {
            t: s.execute(text(f"SELECT count(*) FROM {t} WHERE {col} = :t"), {"t": str(tenant_id)}).scalar()
            for t, col in tables.items()
        }


def test_every_tenant_table_has_forced_rls(platform_db):
    with app_engine().connect() as conn:
        tables = _tenant_tables(conn)
        flags = dict(
            conn.execute(
                text("SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname = ANY(:t) "
                     "AND relnamespace = 'public'::regnamespace"),
                {"t": list(tables)},
            ).all()
        )
    assert {"tenants", "users", "documents", "chunks", "audit_events"} <= set(tables)
    assert flags == {t: True for t in tables}


def test_app_role_is_not_owner_superuser_or_bypassrls(platform_db):
    s = get_settings()
    with app_engine().connect() as conn:
        me = conn.execute(
            text("SELECT current_user, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
                 "FROM pg_roles WHERE rolname = current_user")
        ).one()
        owned = conn.execute(
            text("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                 "WHERE r.rolname = current_user")
        ).scalar()
        can_become_owner = conn.execute(
            text("SELECT pg_has_role(current_user, :o, 'MEMBER')"), {"o": s.owner_db_role}
        ).scalar()
    assert me.current_user == s.app_db_role
    assert (me.rolsuper, me.rolbypassrls, me.rolcreaterole, me.rolcreatedb) == (False, False, False, False)
    assert owned == 0
    assert can_become_owner is False


def test_unfiltered_reads_see_only_own_tenant(two_tenants):
    a, b = two_tenants
    with tenant_session(a.id) as s:
        tables = _tenant_tables(s.connection())
        for table, col in tables.items():
            seen = set(s.execute(text(f"SELECT DISTINCT {col} FROM {table}")).scalars())
            assert seen == {a.id}, f"{table} leaked {seen - {a.id}}"
        assert s.execute(sa.select(sa.func.count()).select_from(Chunk).where(Chunk.text.like("%of b-%"))).scalar() == 0


def test_unfiltered_updates_and_deletes_touch_zero_rows_of_other_tenant(two_tenants):
    a, b = two_tenants
    with system_session() as s:
        tables = _tenant_tables(s.connection())
    before_b = _counts(b.id, tables)
    assert all(n >= 1 for n in before_b.values()), before_b
    with tenant_session(a.id) as s:
        # No WHERE clause at all: RLS is the only thing standing between A and B.
        assert s.execute(text("UPDATE documents SET title = 'pwned'")).rowcount == 1
        assert s.execute(text("UPDATE chunks SET text = 'pwned'")).rowcount == 1
        assert s.execute(text("UPDATE users SET role = 'admin'")).rowcount == 1
        assert s.execute(text("UPDATE tenants SET display_name = 'pwned'")).rowcount == 1
        assert s.execute(text("UPDATE lexical_stats SET n_chunks = 99")).rowcount == 1
        assert s.execute(text("UPDATE messages SET content = 'pwned'")).rowcount == 1
        assert s.execute(text("UPDATE feedback SET value = -1")).rowcount == 1
        assert s.execute(text("UPDATE term_stats SET df = 1000")).rowcount == 1
        assert s.execute(text("UPDATE alerts SET status = 'resolved'")).rowcount == 1
        assert s.execute(text("DELETE FROM mes_observations")).rowcount == 1
        assert s.execute(text("UPDATE user_goals SET status = 'done'")).rowcount == 1
        assert s.execute(text("DELETE FROM memories")).rowcount == 1
        assert s.execute(text("DELETE FROM agent_lessons")).rowcount == 1
        assert s.execute(text("DELETE FROM alert_rules")).rowcount == 1
        assert s.execute(text("DELETE FROM conversations")).rowcount == 1
        assert s.execute(text("DELETE FROM chunk_terms")).rowcount == 1
        assert s.execute(text("DELETE FROM chunks")).rowcount == 1
        assert s.execute(text("DELETE FROM documents")).rowcount == 1
        assert s.execute(text("DELETE FROM users")).rowcount == 1
    assert _counts(b.id, tables) == before_b
    with tenant_session(b.id) as s:
        assert s.execute(text("SELECT title FROM documents")).scalars().all() == ["t"]
        assert s.execute(text("SELECT text FROM chunks")).scalars().all() == [f"secret of {b.name}"]
        assert s.execute(text("SELECT display_name FROM tenants")).scalar() == b.name
        assert s.execute(text("SELECT role FROM users")).scalars().all() == ["viewer"]


def test_cannot_write_rows_into_another_tenant(two_tenants):
    a, b = two_tenants
    with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
        with tenant_session(a.id) as s:
            s.add(User(tenant_id=b.id, username="intruder", role="admin"))
            s.flush()
    with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
        with tenant_session(a.id) as s:
            s.execute(text("UPDATE documents SET tenant_id = :b"), {"b": str(b.id)})


def test_no_tenant_set_means_no_rows(two_tenants):
    with app_engine().connect() as conn:
        for table in _tenant_tables(conn):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
        assert conn.execute(text("DELETE FROM documents")).rowcount == 0
        conn.rollback()


def test_tenant_setting_does_not_survive_the_transaction(two_tenants):
    a, _ = two_tenants
    with tenant_session(a.id) as s:
        assert s.execute(text("SELECT count(*) FROM documents")).scalar() == 1
    # The same pooled connection, next transaction: SET LOCAL is gone.
    with app_engine().connect() as conn:
        assert conn.execute(text("SELECT current_setting('eap.tenant_id', true)")).scalar() in (None, "")
        assert conn.execute(text("SELECT count(*) FROM documents")).scalar() == 0


def test_app_role_cannot_escalate(platform_db):
    s = get_settings()
    for stmt in (
        f'SET ROLE "{s.owner_db_role}"',
        "SET ROLE postgres",
        "ALTER TABLE documents DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE documents NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY documents_tenant_isolation ON documents",
    ):
        with app_engine().connect() as conn:
            with pytest.raises(sa.exc.DBAPIError):
                conn.execute(text(stmt))


def test_unknown_tenant_id_sees_nothing(two_tenants):
    with tenant_session(uuid.uuid4()) as s:
        assert s.execute(text("SELECT count(*) FROM documents")).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM tenants")).scalar() == 0
