"""Write operations with a human in the loop, end to end against the MES simulator (real HTTP on loopback), the
real API and real Dagster runs: a change asked for in chat becomes a proposal (nothing written), a second person
with the approver permission approves it, the sensor launches `execute_operation`, and the simulator shows the
write. Plus: self-approval 403, two approvals for high risk, a changed record → FAILED with the reason, a crash
between the write and its recording does not write twice, escalation then expiry on a simulated clock, every
transition audited, tenant isolation."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import dagster as dg
import pytest
from sqlalchemy import text

from connectors.mes_simulator import MESSimulator
from core.db.database import tenant_session
from core.settings import get_settings
from operations import executor
from tests.builders import SmtpSink, Webhook, _bearer


@pytest.fixture(scope="module")
def env(platform_db, client):
    import definitions

    sink = SmtpSink()
    sim = MESSimulator(seed=11).start()
    resources = {"db": definitions.defs.resources["db"]}
    yield {"client": client, "sim": sim, "sink": sink, "hook": Webhook(), "defs": definitions.defs,
           "resources": resources, "inst": dg.DagsterInstance.ephemeral()}
    sim.stop()
    sink.close()


def _h(t, user, role="operator", roles=()):
    return _bearer(t.id, t.name, role, user, roles=roles)


@pytest.fixture
def plant(env, make_tenant):
    t = make_tenant("ops")
    r = env["client"].put("/v1/integrations/mes", json={"base_url": env["sim"].url, "timeout_s": 2, "retries": 0},
                          headers=_h(t, "root", "admin"))
    assert r.status_code == 200, r.text
    return t


def _tick(env, now=None):
    """One tick of the real sensor (wall clock), or of its plan at a simulated time; then every requested run."""
    from sensors.operations import operation_proposals, plan_tick

    if now is None:
        ctx = dg.build_sensor_context(instance=env["inst"], resources=env["resources"])
        res = operation_proposals(ctx)
        requests = [] if isinstance(res, dg.SkipReason) else res.run_requests
    else:
        requests, _ = plan_tick(env["resources"]["db"], now)
    results = []
    for rr in requests:
        job = env["defs"].resolve_job_def(rr.job_name)
        results.append((rr, job.execute_in_process(run_config=rr.run_config, instance=env["inst"],
                                                   resources=env["resources"], tags=rr.tags)))
    return results


def _proposal(t, pid):
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT * FROM operation_proposals WHERE id = :i"), {"i": str(pid)}).mappings().one()


def _transitions(t, pid):
    with tenant_session(t.id) as s:
        return [(r.action, r.actor, r.outcome) for r in s.execute(text(
            "SELECT action, actor, outcome FROM audit_events WHERE resource_type = 'operation' AND resource_id = :i "
            "ORDER BY seq"), {"i": str(pid)})]


def _propose(env, t, user, operation, payload, role="operator", target="mes"):
    r = env["client"].post("/v1/operations", json={"target": target, "operation": operation, "payload": payload},
                           headers=_h(t, user, role))
    assert r.status_code == 201, r.text
    return r.json()


def test_chat_proposal_approved_by_a_second_user_is_executed_by_dagster(env, plant):
    t, sim, c = plant, env["sim"], env["client"]
    writes0, orders0 = sim.applied_writes, len(sim.state.work_orders)
    r = c.post("/v1/chat", json={"message": "Create a high-priority maintenance work order for M-3: replace the "
                                            "hydraulic pump seal"}, headers=_h(t, "olga", roles=("approver",)))
    assert r.status_code == 200, r.text
    out = r.json()
    step = next(s for s in out["trace"] if s.get("tool") == "propose_operation")
    pid = step["result"]["proposal_id"]
    assert "I have not changed anything" in out["answer"] and pid in out["answer"]
    assert "executed" not in out["answer"].lower().replace("not executed", "")
    assert out["outcome"] == "proposed"
    assert "nobody can approve this proposal" in out["answer"]  # no user of this tenant holds the grant yet
    assert sim.applied_writes == writes0 and len(sim.state.work_orders) == orders0  # nothing written yet
    view = c.get(f"/v1/operations/{pid}", headers=_h(t, "adam")).json()
    assert view["status"] == "proposed" and view["risk"] == "medium" and view["source"] == "chat"
    assert view["preview"]["current"]["state"] == "RUNNING" and view["payload"]["priority"] == "high"

    # The sensor has nothing to run for an undecided proposal.
    assert [rr for rr, _ in _tick(env) if pid in rr.run_key] == []
    # Self-approval: refused even though the proposer holds the approver permission.
    r = c.post(f"/v1/operations/{pid}/approve", json={"reason": "mine"}, headers=_h(t, "olga", roles=("approver",)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "own_proposal"
    # Without the approver permission: refused.
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "victor"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "approver_required"
    # The approver permission as a customer grants it: a tenant admin on the user's record (no token claim).
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "adam"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "approver_required"
    _user(c, t, "adam", "adam@plant.local")
    assert c.get(f"/v1/operations/{pid}", headers=_h(t, "adam")).json()["eligible_approvers"] == ["adam"]
    r = c.post(f"/v1/operations/{pid}/approve", json={"reason": "pump seal is leaking"}, headers=_h(t, "adam"))
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text

    runs = [(rr, res) for rr, res in _tick(env) if pid in rr.run_key]
    assert len(runs) == 1 and runs[0][0].job_name == "execute_operation" and runs[0][1].success
    done = c.get(f"/v1/operations/{pid}", headers=_h(t, "olga")).json()
    assert done["status"] == "executed" and done["executed_at"]
    wo = done["result"]["work_order"]
    created = [w for w in sim.state.work_orders if w["work_order_id"] == wo["work_order_id"]]
    assert len(created) == 1 and len(sim.state.work_orders) == orders0 + 1
    assert (created[0]["machine_id"], created[0]["description"], created[0]["priority"], created[0]["requested_by"]) \
        == ("M-3", "replace the hydraulic pump seal", "high", "olga")
    assert sim.applied_writes == writes0 + 1
    # Next tick: nothing to run again.
    assert [rr for rr, _ in _tick(env) if pid in rr.run_key] == []
    assert [a for a, _, _ in _transitions(t, pid)] == [
        "operation.propose", "operation.approve", "operation.approve", "operation.approve", "operation.approve",
        "operation.execute_start", "operation.executed"]
    assert [o for a, _, o in _transitions(t, pid) if a == "operation.approve"] == [
        "denied", "denied", "denied", "success"]


def test_high_risk_needs_two_approvers_and_a_changed_record_fails_with_the_reason(env, plant):
    t, sim, c = plant, env["sim"], env["client"]
    sim.restore("M-2")
    p = _propose(env, t, "olga", "hold_machine", {"machine_id": "M-2", "reason": "suspected cracked frame"})
    pid = p["id"]
    assert p["risk"] == "high" and p["required_approvals"] == 2
    assert {"field": "hold", "current": False, "new": True} in p["preview"]["changes"]
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
    assert r.json()["status"] == "proposed" and len(r.json()["approvals"]) == 1
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_decided"
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "anna", "admin", roles=("approver",)))
    assert r.json()["status"] == "approved"

    sim.force_down("M-2", reason="operator stopped it")  # the record changes between approval and execution
    writes = sim.applied_writes
    runs = [res for rr, res in _tick(env) if pid in rr.run_key]
    assert len(runs) == 1 and runs[0].success  # the run succeeds; the operation fails with its reason
    row = _proposal(t, pid)
    assert row["status"] == "failed"
    assert "changed since the proposal" in row["status_reason"] and "'RUNNING' → 'DOWN'" in row["status_reason"]
    assert sim.applied_writes == writes and sim.state.machines["M-2"].hold is False  # nothing overwritten
    assert _transitions(t, pid)[-1] == ("operation.failed", "operations-executor", "failure")
    assert [rr for rr, _ in _tick(env) if pid in rr.run_key] == []  # not retried


def test_a_crash_between_the_write_and_its_recording_does_not_write_twice(env, plant):
    t, sim, c = plant, env["sim"], env["client"]
    sim.restore("M-4")
    p = _propose(env, t, "olga", "hold_machine", {"machine_id": "M-4", "reason": "coolant contamination"})
    for approver in ("adam", "anna"):
        c.post(f"/v1/operations/{p['id']}/approve", json={}, headers=_h(t, approver, roles=("approver",)))
    pid = uuid.UUID(p["id"])
    # A run claims it and writes to MES — then dies before recording the result (no `finish`).
    claim = executor.claim(t.id, pid, run_id="crashed-run")
    writes = sim.applied_writes
    performed = executor.perform(claim)
    assert performed.ok and sim.applied_writes == writes + 1 and sim.state.machines["M-4"].hold is True
    assert _proposal(t, pid)["status"] == "executing"
    # Until the claim is stale nothing is relaunched; after that, the resumed run sends the same key.
    assert [rr for rr, _ in _tick(env) if p["id"] in rr.run_key] == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=get_settings().operations_stale_execution_s + 5)
    runs = [(rr, res) for rr, res in _tick(env, now=later) if p["id"] in rr.run_key]
    assert len(runs) == 1 and runs[0][0].run_key == f"execute:{pid}:1" and runs[0][1].success
    row = _proposal(t, pid)
    assert row["status"] == "executed" and row["attempts"] == 2
    assert sim.applied_writes == writes + 1  # the MES answered the repeated idempotency key: no second write
    actions = [a for a, _, _ in _transitions(t, pid)]
    assert actions[-3:] == ["operation.execute_start", "operation.execute_resume", "operation.executed"]
    with tenant_session(t.id) as s:
        details = s.execute(text("SELECT details FROM audit_events WHERE resource_id = :i AND "
                                 "action = 'operation.executed'"), {"i": str(pid)}).scalar_one()
    assert details["replayed"] is True


def _user(c, t, username, email=None, permissions=("approver",)):
    r = c.post("/v1/admin/users", headers=_h(t, "root", "admin"),
               json={"username": username, "role": "operator", "permissions": list(permissions), "email": email})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_undecided_proposal_escalates_then_expires_on_a_simulated_clock(env, plant):
    """The chain is the users holding the approver permission in the database (oldest first, without the
    proposer); it is not configuration text."""
    t, c, hook, sink = plant, env["client"], env["hook"], env["sink"]
    r = c.put("/v1/operations-settings", headers=_h(t, "root", "admin"), json={
        "escalate_after_minutes": 30, "expiry_hours": 2,
        "escalation": [{"name": "shift manager", "emails": ["shift.manager@plant.local"]}]})
    assert r.status_code == 422  # a chain typed into settings is refused
    r = c.put("/v1/operations-settings", headers=_h(t, "root", "admin"),
              json={"escalate_after_minutes": 30, "expiry_hours": 2, "webhooks": [hook.url]})
    assert r.status_code == 200, r.text
    _user(c, t, "olga", "olga@plant.local")  # the proposer holds the permission too: never her own approver
    _user(c, t, "shift", "shift.manager@plant.local")
    plant_id = _user(c, t, "plantmgr", "plant.manager@plant.local")
    _user(c, t, "victor", "victor@plant.local", permissions=())  # no grant: not in the chain
    got = c.get("/v1/operations-settings", headers=_h(t, "root", "admin")).json()
    assert [a["username"] for a in got["approvers"]] == ["olga", "shift", "plantmgr"]

    p = _propose(env, t, "olga", "create_work_order", {"machine_id": "M-6", "description": "check the spindle noise"})
    pid, created = p["id"], dt.datetime.fromisoformat(p["created_at"])
    assert p["eligible_approvers"] == ["shift", "plantmgr"] and p["approval_note"] is None
    posts, mails = len(hook.posts), len(sink.messages)

    assert [rr for rr, _ in _tick(env, created + dt.timedelta(minutes=20)) if pid in rr.run_key] == []
    first = [(rr, res) for rr, res in _tick(env, created + dt.timedelta(minutes=31)) if pid in rr.run_key]
    assert [rr.run_key for rr, _ in first] == [f"escalate:{pid}:1"] and first[0][1].success
    assert len(hook.posts) == posts + 1 and pid in hook.posts[-1]["text"]
    assert hook.posts[-1]["operation"]["approver"] == "shift"
    assert len(sink.messages) == mails + 1 and sink.messages[-1].rcpt_tos == ["shift.manager@plant.local"]
    # Same time again: that level is not sent twice.
    assert [rr for rr, _ in _tick(env, created + dt.timedelta(minutes=32)) if pid in rr.run_key] == []
    second = [(rr, res) for rr, res in _tick(env, created + dt.timedelta(minutes=61)) if pid in rr.run_key]
    assert [rr.run_key for rr, _ in second] == [f"escalate:{pid}:2"]
    assert sink.messages[-1].rcpt_tos == ["plant.manager@plant.local"] and len(hook.posts) == posts + 2
    assert _proposal(t, pid)["escalation_level"] == 2
    # The chain is exhausted: no third escalation.
    assert [rr for rr, _ in _tick(env, created + dt.timedelta(minutes=95)) if pid in rr.run_key] == []

    assert [rr for rr, _ in _tick(env, created + dt.timedelta(hours=2, minutes=1)) if pid in rr.run_key] == []
    row = _proposal(t, pid)
    assert row["status"] == "expired" and row["status_reason"] == "not decided before its expiry"
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
    assert r.status_code == 409 and r.json()["error"]["code"] == "proposal_not_open"
    assert [a for a, _, _ in _transitions(t, pid)] == [
        "operation.propose", "operation.escalate", "operation.escalate", "operation.expire", "operation.approve"]

    # A high-risk proposal (two approvals) with one other approver left after a grant is revoked: it says so.
    assert c.patch(f"/v1/admin/users/{plant_id}", headers=_h(t, "root", "admin"),
                   json={"permissions": []}).status_code == 200
    p = _propose(env, t, "olga", "hold_machine", {"machine_id": "M-6", "reason": "spindle bearing worn"})
    assert p["required_approvals"] == 2 and p["eligible_approvers"] == ["shift"]
    assert "only 1 other user(s) hold the approver permission" in p["approval_note"]
    c.post(f"/v1/operations/{p['id']}/cancel", json={}, headers=_h(t, "olga"))


def test_a_proposal_nobody_can_approve_says_so_and_its_escalation_reports_it(env, plant):
    t, c, hook = plant, env["client"], env["hook"]
    c.put("/v1/operations-settings", headers=_h(t, "root", "admin"),
          json={"escalate_after_minutes": 30, "expiry_hours": 2, "webhooks": [hook.url]})
    _user(c, t, "olga", "olga@plant.local")  # the only approver is the proposer herself
    r = c.post("/v1/chat", json={"message": "Create a maintenance work order for M-1: replace the drive belt"},
               headers=_h(t, "olga", roles=("approver",)))
    assert r.status_code == 200, r.text
    pid = next(s for s in r.json()["trace"] if s.get("tool") == "propose_operation")["result"]["proposal_id"]
    assert "nobody can approve this proposal" in r.json()["answer"]
    view = c.get(f"/v1/operations/{pid}", headers=_h(t, "olga")).json()
    assert view["eligible_approvers"] == [] and "a tenant admin must grant it" in view["approval_note"]
    posts = len(hook.posts)
    created = dt.datetime.fromisoformat(view["created_at"])
    runs = [(rr, res) for rr, res in _tick(env, created + dt.timedelta(minutes=31)) if pid in rr.run_key]
    assert [rr.run_key for rr, _ in runs] == [f"escalate:{pid}:1"] and runs[0][1].success
    assert len(hook.posts) == posts + 1 and hook.posts[-1]["title"].startswith("[NO APPROVER]")
    assert [rr for rr, _ in _tick(env, created + dt.timedelta(minutes=95)) if pid in rr.run_key] == []
    with tenant_session(t.id) as s:
        esc = s.execute(text("SELECT outcome, details FROM audit_events WHERE resource_id = :i AND "
                             "action = 'operation.escalate'"), {"i": pid}).one()
    assert esc.outcome == "failure" and esc.details["reason"] == "no_eligible_approver"


def test_proposals_are_tenant_isolated_and_cancellable_by_the_proposer(env, plant, make_tenant):
    t, c = plant, env["client"]
    other = make_tenant("ops-other")
    p = _propose(env, t, "olga", "create_work_order", {"machine_id": "M-1", "description": "replace the belt"})
    pid = p["id"]
    assert c.get(f"/v1/operations/{pid}", headers=_h(other, "eve", "admin")).status_code == 404
    assert c.get("/v1/operations", headers=_h(other, "eve", "admin")).json() == []
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(other, "eve", "admin", roles=("approver",)))
    assert r.status_code == 404 and _proposal(t, pid)["status"] == "proposed"
    assert [x["id"] for x in c.get("/v1/operations?status=proposed", headers=_h(t, "adam")).json()].count(pid) == 1

    r = c.post(f"/v1/operations/{pid}/cancel", json={"reason": "not mine"}, headers=_h(t, "adam"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_proposer"
    r = c.post(f"/v1/operations/{pid}/cancel", json={"reason": "fixed it myself"}, headers=_h(t, "olga"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = c.post(f"/v1/operations/{pid}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
    assert r.status_code == 409


def test_bad_proposals_get_clear_errors(env, plant):
    t, c = plant, env["client"]
    r = c.post("/v1/operations", json={"target": "mes", "operation": "hold_machine",
                                       "payload": {"machine_id": "M-1", "reason": "x"}}, headers=_h(t, "olga"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_payload"
    r = c.post("/v1/operations", json={"target": "mes", "operation": "hold_machine",
                                       "payload": {"machine_id": "M-99", "reason": "broken"}}, headers=_h(t, "olga"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_record"
    r = c.post("/v1/operations", json={"target": "mes", "operation": "drop_tables", "payload": {}},
               headers=_h(t, "olga"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_operation"
    r = c.post("/v1/operations", json={"target": "mes", "operation": "hold_machine",
                                       "payload": {"machine_id": "M-1", "reason": "broken"}},
               headers=_h(t, "vera", "viewer"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    env["sim"].slow(3)  # MES slower than the tenant's 2 s timeout
    try:
        r = c.post("/v1/operations", json={"target": "mes", "operation": "create_work_order",
                                           "payload": {"machine_id": "M-1", "description": "check it"}},
                   headers=_h(t, "olga"))
    finally:
        env["sim"].slow(0)
    assert r.status_code == 502 and r.json()["error"]["code"] == "target_unavailable"
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM operation_proposals")).scalar() == 0


def test_sap_writes_go_through_the_sap_client_with_etag_and_csrf(env, plant, monkeypatch):
    from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator
    from identity.tenancy import set_tenant_setting

    t, c = plant, env["client"]
    monkeypatch.setenv("EAP_SAP_OPS_PASSWORD", DEFAULT_PASSWORD)
    sap = SAPSimulator(seed=7).start()
    try:
        set_tenant_setting(t.id, "sap", {"base_url": sap.url, "username": DEFAULT_USER, "timeout_s": 2, "retries": 0,
                                         "password_env": "EAP_SAP_OPS_PASSWORD"}, actor="root", actor_role="admin")
        sap.expire_csrf_tokens()  # the first write meets a stale token: the client fetches a fresh one

        # A reservation item changed in SAP after approval: FAILED with the reason, SAP keeps the other change.
        p = _propose(env, t, "olga", "update_reservation_item",
                     {"reservation": "0000000001", "item": "0001", "quantity": "3"}, target="sap")
        assert p["preview"]["changes"] == [{"field": "quantity", "current": "1.000", "new": "3"}]
        c.post(f"/v1/operations/{p['id']}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
        sap.change_reservation_item("0000000001", "0001", 2)
        assert [res.success for rr, res in _tick(env) if p["id"] in rr.run_key] == [True]
        row = _proposal(t, p["id"])
        assert row["status"] == "failed" and "quantity '1.000' → '2.000'" in row["status_reason"], row["status_reason"]
        item = next(i for r in sap.reservations() for i in r["items"] if r["Reservation"] == "0000000001")
        assert Decimal(str(item["ResvnItmRequiredQtyInBaseUnit"])) == Decimal(2)

        # The same change proposed again on the current record: executed through the client (If-Match, CSRF).
        p = _propose(env, t, "olga", "update_reservation_item",
                     {"reservation": "0000000001", "item": "0001", "quantity": "4"}, target="sap")
        c.post(f"/v1/operations/{p['id']}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
        assert [res.success for rr, res in _tick(env) if p["id"] in rr.run_key] == [True]
        assert _proposal(t, p["id"])["status"] == "executed"
        item = next(i for r in sap.reservations() for i in r["items"] if r["Reservation"] == "0000000001")
        assert Decimal(str(item["ResvnItmRequiredQtyInBaseUnit"])) == Decimal(4)

        # A requisition in another unit than the material's base unit is refused at once, not after approval.
        r = c.post("/v1/operations", headers=_h(t, "olga"), json={
            "target": "sap", "operation": "create_purchase_requisition",
            "payload": {"material": "RM-1001", "plant": "1010", "quantity": "40", "unit": "PC"}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unit_mismatch", r.text
        assert "KG" in r.json()["error"]["message"]

        # A purchase requisition asked for in chat: a proposal first, then created in SAP with the proposal's
        # reference in its description.
        before = len(sap.purchase_requisitions())
        r = c.post("/v1/chat", json={"message": "Create a purchase requisition for 50 KG of RM-1001 at plant 1010"},
                   headers=_h(t, "olga"))
        step = next(s for s in r.json()["trace"] if s.get("tool") == "propose_operation")
        assert "I have not changed anything" in r.json()["answer"] and len(sap.purchase_requisitions()) == before
        p = c.get(f"/v1/operations/{step['result']['proposal_id']}", headers=_h(t, "olga")).json()
        assert p["target"] == "sap" and p["operation"] == "create_purchase_requisition" and p["risk"] == "medium"
        assert float(p["preview"]["current"]["unrestricted_stock"]) > 0
        c.post(f"/v1/operations/{p['id']}/approve", json={}, headers=_h(t, "adam", roles=("approver",)))
        assert [res.success for rr, res in _tick(env) if p["id"] in rr.run_key] == [True]
        done = _proposal(t, p["id"])
        assert done["status"] == "executed", done["status_reason"]
        prs = sap.purchase_requisitions()
        assert len(prs) == before + 1
        created = next(x for x in prs if x["PurchaseRequisition"] == done["result"]["purchase_requisition"])
        assert created["PurReqnDescription"] == done["idempotency_key"].removeprefix("eap-op-")
        assert [(i["Material"], Decimal(str(i["RequestedQuantity"]))) for i in created["items"]] == [
            ("RM-1001", Decimal(50))]
    finally:
        sap.stop()
