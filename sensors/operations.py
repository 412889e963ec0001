"""The write-operations sensor: every tick (15 s) it expires proposals past their expiry, requests an
`escalate_operation` run for each proposal due for escalation (run key per level), and an `execute_operation`
run for each approved proposal and each execution whose run died (run key per attempt, so a tick never
launches the same attempt twice)."""

import datetime as dt

import dagster as dg

from assets.resources import PlatformDatabase
from jobs.operations import escalate_operation, execute_operation
from operations import executor, proposals


def plan_tick(db: PlatformDatabase, now: dt.datetime) -> tuple[list[dg.RunRequest], list[str]]:
    """The run requests and notes of one tick at `now` (the sensor passes the wall clock)."""
    runs: list[dg.RunRequest] = []
    notes: list[str] = []
    for tenant_id in executor.tenants_with_open_proposals():
        with db.tenant(tenant_id) as s:
            expired, due = proposals.sweep(s, tenant_id, now)
        if expired:
            notes.append(f"{expired} proposal(s) of tenant {tenant_id} expired")
        for d in due:
            runs.append(dg.RunRequest(
                run_key=f"escalate:{d.proposal_id}:{d.level}", job_name=escalate_operation.name,
                run_config={"ops": {"escalate_pending_operation": {"config": {
                    "tenant_id": str(d.tenant_id), "proposal_id": str(d.proposal_id), "level": d.level,
                    "as_of": now.isoformat()}}}},
                tags={"eap/tenant_id": str(d.tenant_id), "eap/proposal": str(d.proposal_id)}))
    for tenant_id, proposal_id, attempts in executor.executable(now):
        runs.append(dg.RunRequest(
            run_key=f"execute:{proposal_id}:{attempts}", job_name=execute_operation.name,
            run_config={"ops": {"execute_approved_operation": {"config": {
                "tenant_id": str(tenant_id), "proposal_id": str(proposal_id)}}}},
            tags={"eap/tenant_id": str(tenant_id), "eap/proposal": str(proposal_id)}))
    return runs, notes


@dg.sensor(name="operation_proposals", jobs=[execute_operation, escalate_operation], minimum_interval_seconds=15,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Approved write operations → execute_operation; undecided ones → escalate/expire.")
def operation_proposals(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
    runs, notes = plan_tick(db, dt.datetime.now(dt.UTC))
    if not runs:
        return dg.SkipReason("no approved or overdue proposals" + (f" ({'; '.join(notes)})" if notes else ""))
    return dg.SensorResult(run_requests=runs)


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[operation_proposals])
