"""Write proposals in the browser, against the MES simulator on loopback (the fixture the write-operation
integration tests use): a change user A asks for in chat becomes a proposal that A's own panel shows without an
approve button; user B (approver permission) sees in the approvals panel what it will do (field, now, after),
approves one and rejects another with a reason; the statuses update on the page and in the database, and the
approved one is then executed by the real Dagster job `execute_operation`."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import bearer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def mes():
    from connectors.mes_simulator import MESSimulator

    sim = MESSimulator(seed=11).start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def plant(web_server, mes):
    import httpx

    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"webops-{uuid.uuid4().hex[:8]}")
    r = httpx.put(f"{web_server}/v1/integrations/mes", headers=bearer(t, "root", Role.admin),
                  json={"base_url": mes.url, "timeout_s": 2, "retries": 0})
    assert r.status_code == 200, r.text
    return t


def token(t, user: str, permissions=()) -> str:
    return mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.operator, subject=user,
                      extra={"roles": list(permissions)} if permissions else None)


def _status(t, pid: str) -> tuple[str, str | None]:
    with tenant_session(t.id) as s:
        row = s.execute(text("SELECT status, status_reason FROM operation_proposals WHERE id = :i"), {"i": pid}).one()
    return row.status, row.status_reason


def _execute_approved(t) -> list:
    """One tick of the operations sensor, then the runs it asks for (as the Dagster daemon would)."""
    import dagster as dg

    import definitions
    from sensors.operations import operation_proposals

    resources = {"db": definitions.defs.resources["db"]}
    inst = dg.DagsterInstance.ephemeral()
    res = operation_proposals(dg.build_sensor_context(instance=inst, resources=resources))
    requests = [] if isinstance(res, dg.SkipReason) else res.run_requests
    return [definitions.defs.resolve_job_def(rr.job_name).execute_in_process(
        run_config=rr.run_config, instance=inst, resources=resources, tags=rr.tags) for rr in requests]


def test_a_proposal_from_chat_is_approved_or_rejected_by_someone_else_in_the_browser(browser, web_server, plant, mes,
                                                                                     axe):
    import httpx

    ctx_a = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web_server, bypass_csp=True)
    ctx_b = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web_server, bypass_csp=True)
    ctx_a.set_default_timeout(20_000)
    ctx_b.set_default_timeout(20_000)
    try:
        # A (olga, with the approver permission herself) asks for a change in chat: a proposal, nothing written.
        a = ctx_a.new_page()
        a.goto("/")
        a.get_by_role("tab", name="Token").click()
        a.get_by_label("Access token").fill(token(plant, "olga", ["approver"]))
        a.get_by_role("button", name="Use token").click()
        writes = mes.applied_writes
        a.get_by_label("Your question").fill("Create a high-priority maintenance work order for M-3: replace the "
                                              "hydraulic pump seal")
        a.get_by_role("button", name="Send").click()
        answer = a.get_by_test_id("answer").last
        # The first answer of a process also loads the router's and the embedder's models (slow on a busy host).
        expect(answer).to_have_attribute("data-state", "done", timeout=180_000)
        expect(answer).to_contain_text("I have not changed anything")
        with tenant_session(plant.id) as s:
            first = str(s.execute(text("SELECT id FROM operation_proposals WHERE proposer = 'olga' "
                                       "ORDER BY created_at DESC LIMIT 1")).scalar_one())
        assert mes.applied_writes == writes
        a.get_by_role("navigation", name="Main").get_by_role("button", name="Alerts & approvals").click()
        mine = a.get_by_test_id("pending-proposals").get_by_test_id("proposal").filter(has_text="M-3")
        expect(mine).to_have_count(1)
        expect(mine.get_by_test_id("own-proposal")).to_be_visible()
        expect(mine.get_by_role("button", name="Approve")).to_have_count(0)  # not even with the permission
        # ... and the API refuses it from her session too.
        refused = a.evaluate("""async (id) => {
          const r = await fetch(`/v1/operations/${id}/approve`, {method: 'POST', body: '{}', headers: {
            'Content-Type': 'application/json', Authorization: 'Bearer ' + sessionStorage.getItem('eap.token')}});
          return [r.status, (await r.json()).error.code];
        }""", first)
        assert refused == [403, "own_proposal"]
        a.screenshot(path=str(_shots() / "web-approvals-own.png"), full_page=True)

        # A second proposal, through the API: B will reject it.
        r = httpx.post(f"{web_server}/v1/operations", headers={"Authorization": f"Bearer {token(plant, 'olga')}"},
                       json={"target": "mes", "operation": "create_work_order",
                             "payload": {"machine_id": "M-6", "description": "check the spindle noise"}})
        assert r.status_code == 201, r.text
        second = r.json()["id"]

        # B (adam, approver) sees both with what they will do.
        b = ctx_b.new_page()
        b.goto("/admin")
        b.get_by_role("tab", name="Token").click()
        b.get_by_label("Access token").fill(token(plant, "adam", ["approver"]))
        b.get_by_role("button", name="Use token").click()
        pending = b.get_by_test_id("pending-proposals")
        card = pending.get_by_test_id("proposal").filter(has_text="M-3")
        expect(card).to_contain_text("Create a maintenance work order")
        expect(card).to_contain_text("Proposed by olga; 0 of 1 approval(s)")
        changes = card.get_by_test_id("proposal-changes")
        expect(changes.get_by_role("row").filter(has_text="work order")).to_contain_text(
            "replace the hydraulic pump seal (priority high)")
        expect(changes.get_by_role("row").filter(has_text="machine M-3 state")).to_contain_text("RUNNING")
        expect(card.get_by_test_id("proposal-status")).to_have_text("proposed")
        b.screenshot(path=str(_shots() / "web-approvals-pending.png"), full_page=True)
        assert not (bad := axe(b)), ("approvals panel", bad)

        card.get_by_label("Reason").fill("pump seal is leaking")
        card.get_by_role("button", name="Approve").click()
        expect(b.get_by_role("status").filter(has_text="approved")).to_be_visible()
        decided = b.get_by_test_id("decided-proposals").get_by_test_id("proposal").filter(has_text="M-3")
        expect(decided.get_by_test_id("proposal-status")).to_have_text("approved")
        expect(decided.get_by_test_id("proposal-decision")).to_have_text("Approved by adam: pump seal is leaking")
        assert _status(plant, first)[0] == "approved"

        other = pending.get_by_test_id("proposal").filter(has_text="M-6")
        expect(other.get_by_role("button", name="Reject")).to_be_disabled()  # a rejection needs its reason
        other.get_by_label("Reason").fill("a duplicate of WO-17")
        other.get_by_role("button", name="Reject").click()
        rejected = b.get_by_test_id("decided-proposals").get_by_test_id("proposal").filter(has_text="M-6")
        expect(rejected.get_by_test_id("proposal-status")).to_have_text("rejected")
        expect(rejected.get_by_test_id("proposal-reason")).to_have_text("a duplicate of WO-17")
        expect(pending.get_by_test_id("proposal")).to_have_count(0)
        assert _status(plant, second) == ("rejected", "a duplicate of WO-17")
        b.screenshot(path=str(_shots() / "web-approvals-decided.png"), full_page=True)

        # The approved one is executed by Dagster; the page shows it after a reload.
        runs = _execute_approved(plant)
        assert runs and all(run.success for run in runs)
        assert _status(plant, first)[0] == "executed" and mes.applied_writes == writes + 1
        b.reload()
        expect(b.get_by_test_id("decided-proposals").get_by_test_id("proposal").filter(has_text="M-3")
               .get_by_test_id("proposal-status")).to_have_text("executed")
        with tenant_session(plant.id) as s:
            audited = s.execute(text("SELECT action, actor, outcome FROM audit_events WHERE resource_type = "
                                     "'operation' AND resource_id = ANY(:i) AND action IN ('operation.approve', "
                                     "'operation.reject') ORDER BY seq"), {"i": [first, second]}).all()
        assert [tuple(r) for r in audited] == [("operation.approve", "olga", "denied"),
                                               ("operation.approve", "adam", "success"),
                                               ("operation.reject", "adam", "success")]
    finally:
        ctx_a.close()
        ctx_b.close()


def _shots():
    from pathlib import Path

    folder = Path(__file__).resolve().parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
