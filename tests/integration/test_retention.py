"""Issue 15 #2: retention schedules and destruction holds. Records past their period are purged or anonymised by the
nightly Dagster job, records under a hold are untouched, the job's report lists both; the audit trail is purged from
its oldest end behind a signed anchor and still verifies; holds block deletes; policies stay within legal minimums."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import text

from compliance import audit, retention
from core.db.database import get_urls, system_session, tenant_session
from core.models import (
    AgentRun,
    Alert,
    AlertRule,
    Conversation,
    EvalRun,
    Feedback,
    Memory,
    MESObservation,
    Message,
    Role,
    UsageRecord,
)
from tests.builders import officer_headers as _officer
from tests.builders import role_headers as _h

OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=4000)


def _person(s, t, user: str, when: dt.datetime) -> dict:
    """One of everything a user leaves behind, written at `when`."""
    conv = Conversation(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, title=f"{user} q", created_at=when,
                        updated_at=when)
    s.add(conv)
    s.flush()
    msg = Message(id=uuid.uuid4(), tenant_id=t.id, conversation_id=conv.id, role="assistant", content=f"for {user}",
                  created_at=when)
    s.add(msg)
    s.flush()
    fb = Feedback(id=uuid.uuid4(), tenant_id=t.id, message_id=msg.id, user_subject=user, rating="down", value=-1.0,
                  comment=f"{user} says no", created_at=when, updated_at=when)
    mem = Memory(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, memory_type="FACT", content=f"{user} runs P3",
                 importance=0.5, created_at=when, updated_at=when)
    run = AgentRun(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, conversation_id=conv.id, specialist="x",
                   model_tier="LIGHT", model="m", outcome="answered", trace=[], created_at=when)
    use = UsageRecord(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, agent="x", tier="LIGHT", model="m",
                      prompt_tokens=10, completion_tokens=5, cost=0.01, created_at=when)
    s.add_all([fb, mem, run, use])
    return {"conversation": conv.id, "message": msg.id, "feedback": fb.id, "memory": mem.id, "run": run.id,
            "usage": use.id}


def _exists(s, table: str, rid) -> bool:
    return s.execute(text(f"SELECT count(*) FROM {table} WHERE id = :i"), {"i": rid}).scalar() == 1


def test_retention_purges_and_anonymises_except_under_holds(client, make_tenant):
    t = make_tenant("retain")
    with system_session() as s:
        bob_old = _person(s, t, "bob", OLD)
        bob_held_conv = _person(s, t, "bob", OLD)
        bob_new = _person(s, t, "bob", dt.datetime.now(dt.UTC))
        alice_old = _person(s, t, "alice", OLD)
        rule = AlertRule(id=uuid.uuid4(), tenant_id=t.id, name="r", kind="defect_rate", threshold=0.05)
        s.add(rule)
        s.flush()
        alert = Alert(id=uuid.uuid4(), tenant_id=t.id, rule_id=rule.id, subject="M1", status="resolved",
                      severity="warning", message="m", opened_at=OLD, updated_at=OLD, resolved_at=OLD)
        open_alert = Alert(id=uuid.uuid4(), tenant_id=t.id, rule_id=rule.id, subject="M2", status="open",
                           severity="warning", message="m", opened_at=OLD, updated_at=OLD)
        obs = MESObservation(id=uuid.uuid4(), tenant_id=t.id, kind="status", source_id="M1", observed_at=OLD,
                             payload={}, digest="d")
        ev = EvalRun(id=uuid.uuid4(), tenant_id=t.id, dataset_version="v", overall={}, per_specialist={},
                     per_question=[], created_at=OLD)
        s.add_all([alert, open_alert, obs, ev])

    # Policies: configurable per tenant, never below the legal minimum (and both answers are clear).
    r = client.put("/v1/retention/policies/conversations", json={"days": 7}, headers=_officer(t))
    assert r.status_code == 422 and r.json()["error"]["code"] == "below_legal_minimum"
    assert client.put("/v1/retention/policies/nonsense", json={"days": 70}, headers=_officer(t)).status_code == 422
    assert client.put("/v1/retention/policies/conversations", json={"days": 7},
                      headers=_h(t, "ada", Role.admin)).status_code == 403
    r = client.put("/v1/retention/policies/conversations", json={"days": 30}, headers=_officer(t))
    assert r.status_code == 200 and r.json()["days"] == 30 and r.json()["custom"] is True
    # Holds: alice as a person, and one of bob's conversations.
    r = client.post("/v1/holds", json={"scope": "user", "target": "alice", "reason": "litigation L-17"},
                    headers=_officer(t))
    assert r.status_code == 201
    user_hold = r.json()["id"]
    r = client.post("/v1/holds", json={"scope": "conversation", "target": str(bob_held_conv["conversation"]),
                                       "reason": "incident review"}, headers=_officer(t))
    assert r.status_code == 201
    assert client.post("/v1/holds", json={"scope": "document", "target": "not-an-id", "reason": "x"},
                       headers=_officer(t)).status_code == 422

    import definitions

    res = definitions.defs.resolve_job_def("apply_retention").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), resources={"db": definitions.defs.resources["db"]})
    assert res.success
    (mat,) = res.get_asset_materialization_events()
    report = next(rep for rep in mat.materialization.metadata["report"].value if rep["tenant_id"] == str(t.id))
    types = {x["record_type"]: x for x in report["types"]}

    with system_session() as s:
        # Past their period, not held: gone …
        assert not _exists(s, "conversations", bob_old["conversation"])
        assert not _exists(s, "messages", bob_old["message"])
        assert not _exists(s, "memories", bob_old["memory"])
        assert not _exists(s, "agent_runs", bob_old["run"])
        assert not _exists(s, "alerts", alert.id) and not _exists(s, "mes_observations", obs.id)
        assert not _exists(s, "eval_runs", ev.id)
        # … or anonymised (the numbers stay).
        u = s.execute(text("SELECT user_subject, cost FROM usage_records WHERE id = :i"), {"i": bob_old["usage"]}).one()
        assert u.user_subject == "anonymised" and float(u.cost) == 0.01
        # Held: untouched — alice entirely, bob's held conversation with its messages and feedback.
        for rec in (alice_old, bob_held_conv):
            assert _exists(s, "conversations", rec["conversation"]) and _exists(s, "messages", rec["message"])
            f = s.execute(text("SELECT user_subject, comment FROM feedback WHERE id = :i"),
                          {"i": rec["feedback"]}).one()
            assert f.user_subject in ("alice", "bob") and f.comment is not None
        for key, table in (("memory", "memories"), ("run", "agent_runs"), ("usage", "usage_records")):
            assert _exists(s, table, alice_old[key])
        assert s.execute(text("SELECT user_subject FROM usage_records WHERE id = :i"),
                         {"i": alice_old["usage"]}).scalar() == "alice"
        # Within their period: untouched; an open alert is never purged.
        assert all(_exists(s, tb, bob_new[k]) for k, tb in (("conversation", "conversations"), ("memory", "memories"),
                                                             ("run", "agent_runs")))
        assert _exists(s, "alerts", open_alert.id)
    # The report lists both what was done and what the holds kept.
    assert str(bob_old["conversation"]) in types["conversations"]["affected_ids"]
    assert set(types["conversations"]["held_ids"]) == {str(alice_old["conversation"]),
                                                      str(bob_held_conv["conversation"])}
    assert types["conversations"]["days"] == 30
    assert str(alice_old["memory"]) in types["memories"]["held_ids"]
    assert str(bob_old["memory"]) in types["memories"]["affected_ids"]
    assert types["usage"]["action"] == "anonymise" and str(bob_old["usage"]) in types["usage"]["affected_ids"]
    assert types["alerts"]["affected_ids"] == [str(alert.id)]
    assert types["audit_events"]["affected"] == 0  # nothing that old, and a hold keeps the trail anyway
    assert {h["id"] for h in report["holds"]} >= {user_hold}
    with system_session() as s:
        applied = s.execute(text("SELECT details FROM audit_events WHERE tenant_id = :t "
                                 "AND action = 'retention.applied'"), {"t": t.id}).scalar_one()
    assert applied["affected"]["conversations"] == 1 and applied["held"]["conversations"] == 2

    # A hold blocks deletes too, until released (placing, the refusal and releasing are audit records).
    alice = _h(t, "alice")
    r = client.delete(f"/v1/memories/{alice_old['memory']}", headers=alice)
    assert r.status_code == 409 and r.json()["error"]["code"] == "held"
    assert client.post(f"/v1/holds/{user_hold}/release", json={"reason": "case closed"},
                       headers=_officer(t)).status_code == 200
    assert client.delete(f"/v1/memories/{alice_old['memory']}", headers=alice).status_code == 204
    active = client.get("/v1/holds", headers=_officer(t)).json()
    assert [h["scope"] for h in active] == ["conversation"]
    with system_session() as s:
        acts = s.execute(text("SELECT action FROM audit_events WHERE tenant_id = :t AND action LIKE 'hold.%' "
                              "ORDER BY seq"), {"t": t.id}).scalars().all()
    assert acts == ["hold.placed", "hold.placed", "hold.blocked", "hold.released"]  # the refused delete too


def test_audit_trail_purge_keeps_the_chain_verifiable(client, make_tenant, scratch_tenants):
    t = make_tenant("auditpurge")
    scratch_tenants.append(t.id)
    with tenant_session(t.id) as s:
        for i in range(6):
            audit.record(s, tenant_id=t.id, actor="u", action="doc.read", resource_id=str(i))
    with system_session() as s:
        n_before = s.execute(text("SELECT count(*) FROM audit_events WHERE tenant_id = :t"), {"t": t.id}).scalar()
        head = s.execute(text("SELECT seq FROM audit_events WHERE tenant_id = :t ORDER BY seq DESC LIMIT 1"),
                         {"t": t.id}).scalar()
        cp = audit.write_checkpoint(s, t.id)
    assert cp is not None
    # Eight years on, with no hold: everything but the head goes, behind a signed anchor.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2555 + 400)
    with system_session() as s:
        rep = retention.apply(s, t.id, now=later)
    purged = {x.record_type: x for x in rep.types}["audit_events"]
    assert purged.affected == n_before - 1 and "anchored" in (purged.note or "")
    with system_session() as s:
        left = s.execute(text("SELECT seq, action FROM audit_events WHERE tenant_id = :t ORDER BY seq"),
                         {"t": t.id}).all()
    assert left[0].seq == head and left[-1].action == "retention.applied"
    v = client.get("/v1/audit/verify", headers=_officer(t)).json()
    assert v["ok"] is True, v["breaks"]
    assert v["anchor_seq"] is not None and v["anchor_seq"] < head
    # A forged anchor (a superuser hiding more deletions) does not verify.
    eng = sa.create_engine(get_urls().admin)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO audit_anchors (tenant_id, seq, hash, mac, key_id, purged, sig) SELECT "
                              "tenant_id, seq, hash, mac, key_id, 1, repeat('0', 64) FROM audit_events "
                              "WHERE tenant_id = :t ORDER BY seq LIMIT 1"), {"t": t.id})
    finally:
        eng.dispose()
    v = client.get("/v1/audit/verify", headers=_officer(t)).json()
    assert v["ok"] is False and "anchor_invalid" in [b["reason"] for b in v["breaks"]]


_SAP_INSERTS = {
    "sap_stock": ("material, plant, storage_location, stock_type, quantity, unit",
                  ":m, '1000', '0001', 'unrestricted', 5, 'PC'"),
    "sap_materials": ("material, plant, description, product_type, product_group, base_unit, reorder_point, "
                      "safety_stock", ":m, '1000', 'bolt', 'ROH', 'G1', 'PC', 1, 1"),
    "sap_open_po_items": ("purchase_order, item, supplier, supplier_name, material, plant, text, quantity, received, "
                          "open_quantity, unit, net_price, currency, order_date, delivery_date",
                          ":m, '10', 'S1', 'Acme', :m, '1000', 'bolts', 10, 0, 10, 'PC', 1.5, 'EUR', :at, :at"),
    "sap_cost_centers": ("controlling_area, cost_center, name, description, category, responsible, currency, "
                         "planned_costs, actual_costs", "'A000', :m, 'n', 'd', 'E', 'r', 'EUR', 1, 1"),
    "sap_extracts": ("extract, rows, pages, source, duration_ms", "'inventory', 1, 1, 'http://127.0.0.1/sap', 1.0"),
}


def _sap_rows(s, t, when: dt.datetime, tag: str) -> dict[str, uuid.UUID]:
    """One row in each SAP extract table (migration 0018), extracted at `when`."""
    assert set(_SAP_INSERTS) == set(retention.SAP_TABLES)
    ids = {tb: uuid.uuid4() for tb in retention.SAP_TABLES}
    for table, (cols, values) in _SAP_INSERTS.items():
        s.execute(text(f"INSERT INTO {table} (id, tenant_id, extracted_at, {cols}) VALUES (:i, :t, :at, {values})"),
                  {"i": ids[table], "t": t.id, "at": when, "m": f"MAT-{tag}"})
    return ids


def test_sap_extracts_are_in_the_schedule_and_purged_unless_held(client, make_tenant):
    """SAP extract copies (stock history, material master, open PO items, cost centres, extract log) past their
    period are purged by the nightly Dagster job; a tenant hold keeps them; both are in the report and audited."""
    free, held = make_tenant("sapret"), make_tenant("sapheld")
    pol = client.get("/v1/retention/policies", headers=_officer(free)).json()
    assert pol["sap_extracts"]["action"] == "purge" and pol["sap_extracts"]["minimum_days"] >= 90
    r = client.put("/v1/retention/policies/sap_extracts", json={"days": 30}, headers=_officer(free))
    assert r.status_code == 422 and r.json()["error"]["code"] == "below_legal_minimum"
    assert client.put("/v1/retention/policies/sap_extracts", json={"days": 120},
                      headers=_officer(free)).status_code == 200
    now = dt.datetime.now(dt.UTC)
    with system_session() as s:
        free_old = _sap_rows(s, free, now - dt.timedelta(days=200), "old")  # past 120 days, within the default 365
        free_new = _sap_rows(s, free, now - dt.timedelta(days=3), "new")
        held_old = _sap_rows(s, held, OLD, "old")
    assert client.post("/v1/holds", json={"scope": "tenant", "reason": "tax audit 2026"},
                       headers=_officer(held)).status_code == 201

    import definitions

    res = definitions.defs.resolve_job_def("apply_retention").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), resources={"db": definitions.defs.resources["db"]})
    assert res.success
    (mat,) = res.get_asset_materialization_events()
    reports = {rep["tenant_id"]: {x["record_type"]: x for x in rep["types"]}
               for rep in mat.materialization.metadata["report"].value}
    with system_session() as s:
        for table in retention.SAP_TABLES:
            assert not _exists(s, table, free_old[table]), table
            assert _exists(s, table, free_new[table]), table
            assert _exists(s, table, held_old[table]), table
    done, kept = reports[str(free.id)]["sap_extracts"], reports[str(held.id)]["sap_extracts"]
    assert done["days"] == 120 and done["affected"] == len(retention.SAP_TABLES) and done["held"] == 0
    assert set(done["affected_ids"]) == {f"{tb}/{i}" for tb, i in free_old.items()}
    assert kept["affected"] == 0 and set(kept["held_ids"]) == {f"{tb}/{i}" for tb, i in held_old.items()}
    with system_session() as s:
        audited = {str(r.tenant_id): r.details for r in s.execute(text(
            "SELECT tenant_id, details FROM audit_events WHERE action = 'retention.applied' AND tenant_id IN (:a, :b)"),
            {"a": free.id, "b": held.id})}
    assert audited[str(free.id)]["affected"]["sap_extracts"] == len(retention.SAP_TABLES)
    assert audited[str(held.id)]["held"]["sap_extracts"] == len(retention.SAP_TABLES)
