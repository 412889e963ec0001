"""Issue 15 #6: the data steward's workflow in Dagster, as a steward uses it — the real definitions, the real
database and API: pending Class III/IV documents are listed in the review_queue asset and flagged by a WARN
check on their partition; a detector's false raise is lowered with a reason through an approval token; the
steward must be a known steward of the tenant and not the uploader; overdue reviews escalate by webhook once."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import Webhook, chunk_rows, document_row, ensure_steward, steward_review_config, upload_file

# A page of a public software manual: the vendor's support addresses make the PII detector raise it from I to III.
MANUAL = ("# NetConf Manual, chapter 3\n\nConfigure the gateway first. Send reports to support@netconf-labs.eu, "
          "sales@netconf-labs.eu or training@netconf-labs.eu. The console listens on port 8443 by default.\n")
ITAR = "# Servo drive SD-9 datasheet\n\nThe SD-9 assembly is ITAR controlled. Torque the mounts to 12 Nm.\n"
REASON = "public manual: the addresses are documentation examples"


def _resources() -> dict:
    import definitions

    return {"db": definitions.defs.resources["db"]}


def _queue(inst) -> dict:
    from assets.steward import review_queue

    res = dg.materialize([review_queue], instance=inst, resources=_resources())
    assert res.success
    return res.asset_materializations_for_node("review_queue")[0].metadata


def _check_history(inst, doc_id) -> list:
    """The `steward_review_pending` results recorded for one partition, newest first."""
    key = dg.AssetCheckKey(dg.AssetKey("search_index"), "steward_review_pending")
    return [r.event.dagster_event.event_specific_data
            for r in inst.event_log_storage.get_asset_check_execution_history(key, limit=100)
            if r.partition == str(doc_id)]


def _bearer(t, subject, role=Role.operator, groups=(), roles=()) -> dict:
    tok = mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role, subject=subject, groups=list(groups),
                     extra={"roles": list(roles)} if roles else None)
    return {"Authorization": f"Bearer {tok}"}


def test_review_queue_check_lowering_and_steward_identity(client, dagster_env, make_tenant):
    inst, run_pipeline, _ = dagster_env
    t = make_tenant("steward")
    manual = upload_file(client, t, "netconf-manual.md", MANUAL.encode(), classification="I",
                         acl_groups="it", title="NetConf Manual, chapter 3").json()["document_id"]
    itar = upload_file(client, t, "sd9-datasheet.md", ITAR.encode(), role=Role.admin, classification="II",
                       acl_groups="qa", title="Servo drive SD-9 datasheet").json()["document_id"]
    assert all(r.success for r in run_pipeline())
    assert document_row(t.id, manual)["status"] == "awaiting_approval"
    assert document_row(t.id, manual)["classification"] == 3

    # The queue, at a glance: title, tenant, class with the detectors' reasons, uploader, age, sanitised preview.
    meta = _queue(inst)
    table = meta["queue"].value
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if t.name in line}
    assert set(rows) == {"NetConf Manual, chapter 3", "Servo drive SD-9 datasheet"}
    assert "Class III" in rows["NetConf Manual, chapter 3"] and "PII" in rows["NetConf Manual, chapter 3"]
    assert "EMAIL" in rows["NetConf Manual, chapter 3"] and manual in rows["NetConf Manual, chapter 3"]
    assert "Class IV" in rows["Servo drive SD-9 datasheet"] and "export_control 'ITAR'" in table
    assert "operator@t" in rows["NetConf Manual, chapter 3"] and "admin@t" in rows["Servo drive SD-9 datasheet"]
    assert "[EMAIL]" in rows["NetConf Manual, chapter 3"] and "netconf-labs.eu" not in table  # sanitised preview
    assert meta["partitions"].value[manual] == "NetConf Manual, chapter 3"

    # The sensor flags each waiting partition with a failing WARN check naming the document, and asks for a
    # queue refresh; a second tick with nothing new does neither.
    from sensors.steward import steward_review_watch

    tick = steward_review_watch(dg.build_sensor_context(instance=inst, resources=_resources()))
    assert steward_review_watch.job_name == "steward_review_queue"
    assert [rr.run_key[:6] for rr in tick.run_requests] == ["queue:"]
    ev = _check_history(inst, manual)[0]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    assert ev.metadata["title"].value == "NetConf Manual, chapter 3" and ev.metadata["class"].value == "III"
    assert not _check_history(inst, itar)[0].passed
    again = steward_review_watch(dg.build_sensor_context(instance=inst, cursor=tick.cursor, resources=_resources()))
    assert isinstance(again, dg.SkipReason) and len(_check_history(inst, manual)) == 1

    # Only a known steward of the tenant: a token subject with no account, or a deactivated one, is refused.
    url = f"/v1/documents/{manual}/review-token"
    body = {"decision": "approve", "reason": REASON, "classification": "I"}
    r = client.post(url, json=body, headers=_bearer(t, "ghost", groups=("it",), roles=("steward",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "steward_not_known")
    # Lowering only on approval, and never below the uploader's declared class.
    ensure_steward(t.id, "sam.steward", "operator", ["it"])
    sam = _bearer(t, "sam.steward", groups=("it",), roles=("steward",))
    assert client.post(url, json={**body, "decision": "reject"}, headers=sam).status_code == 422
    ensure_steward(t.id, "ada", "admin", ["qa"])
    r = client.post(f"/v1/documents/{itar}/review-token",
                    json={"decision": "approve", "reason": REASON, "classification": "I"},
                    headers=_bearer(t, "ada", Role.admin, ("qa",)))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_class")  # below the declared II

    config = steward_review_config(client, manual, "approve", REASON, steward="sam.steward", classification="I")
    assert config["ops"]["search_index"]["config"]["classification"] == "I"
    # Deactivated between issuing and running: the run refuses and changes nothing.
    with system_session() as s:
        s.execute(text("UPDATE users SET is_active = false WHERE tenant_id = :t AND username = 'sam.steward'"),
                  {"t": t.id})
    import definitions

    job = definitions.defs.resolve_job_def("steward_review")
    failed = job.execute_in_process(instance=inst, partition_key=manual, run_config=config, raise_on_error=False,
                                    resources=_resources())
    assert not failed.success and document_row(t.id, manual)["status"] == "awaiting_approval"
    with system_session() as s:
        s.execute(text("UPDATE users SET is_active = true WHERE tenant_id = :t AND username = 'sam.steward'"),
                  {"t": t.id})

    # The steward lowers the false raise: indexed as Class I, the steward and the reason on record.
    ok = job.execute_in_process(instance=inst, partition_key=manual, run_config=config, resources=_resources())
    assert ok.success
    row = document_row(t.id, manual)
    assert (row["status"], row["classification"], row["reviewed_by"]) == ("indexed", 1, "sam.steward")
    assert row["classification_reasons"][-1] == {"detector": "steward", "class": "I", "from": "III",
                                                 "by": "sam.steward", "reason": REASON}
    assert {c["classification"] for c in chunk_rows(t.id, manual)} == {1}
    with tenant_session(t.id) as s:
        lowered = s.execute(text("SELECT actor, details FROM audit_events WHERE action = "
                                 "'document.classification_lowered' AND resource_id = :d"), {"d": manual}).one()
        approved = s.execute(text("SELECT details FROM audit_events WHERE action = 'document.review.approved' "
                                  "AND resource_id = :d"), {"d": manual}).scalar_one()
    assert lowered.actor == "sam.steward" and lowered.details["reason"] == REASON
    assert (lowered.details["from"], lowered.details["to"]) == ("III", "I")
    assert approved["lowered_to"] == 1
    # The review run re-evaluated the partition's check: green now; the queue no longer lists it.
    checks = {e.check_name: e for e in ok.get_asset_check_evaluations()}
    assert checks["steward_review_pending"].passed and _check_history(inst, manual)[0].passed
    assert manual not in _queue(inst)["queue"].value

    # The uploader cannot approve their own document, even with the steward permission.
    ensure_steward(t.id, "admin@t", "admin", ["qa"])
    r = client.post(f"/v1/documents/{itar}/review-token", json={"decision": "approve", "reason": REASON},
                    headers=_bearer(t, "admin@t", Role.admin, ("qa",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "own_document")


def test_overdue_reviews_escalate_once_by_webhook(client, dagster_env, make_tenant):
    inst, run_pipeline, _ = dagster_env
    t = make_tenant("escalate")
    hook = Webhook()
    admin = _bearer(t, "ada", Role.admin)
    r = client.put("/v1/compliance/steward-escalation", headers=admin,
                   json={"escalate_after_hours": 24, "webhooks": [hook.url], "emails": []})
    assert r.status_code == 200, r.text
    assert client.put("/v1/compliance/steward-escalation", headers=_bearer(t, "olaf"),
                      json={"escalate_after_hours": 24}).status_code == 403
    doc = upload_file(client, t, "itar.md", ITAR.encode(), classification="II").json()["document_id"]
    fresh = upload_file(client, t, "itar-2.md", ITAR.replace("12 Nm", "14 Nm").encode(),
                        classification="II").json()["document_id"]
    assert all(r.success for r in run_pipeline())
    with system_session() as s:  # the first has waited three days, the second just arrived
        s.execute(text("UPDATE documents SET queued_at = now() - interval '3 days' WHERE id = :d"), {"d": doc})

    meta = _queue(inst)
    mine = [p for p in hook.posts if p.get("tenant") == t.name]
    assert [p["document_id"] for p in mine] == [doc]
    assert mine[0]["kind"] == "steward_review_overdue" and mine[0]["age_hours"] >= 72 and mine[0]["class"] == "IV"
    assert meta["escalated"].value >= 1
    _queue(inst)  # the next refresh does not notify again for the same version
    assert [p["document_id"] for p in hook.posts if p.get("tenant") == t.name] == [doc]
    with tenant_session(t.id) as s:
        rows = s.execute(text("SELECT resource_id, outcome, details FROM audit_events "
                              "WHERE action = 'steward.review.escalated'")).all()
    assert [(r.resource_id, r.outcome) for r in rows] == [(doc, "success")]
    assert rows[0].details["deliveries"][0]["delivered"] is True
    assert fresh not in {r.resource_id for r in rows}
