"""Approved write operations, executed by Dagster (visible, retried and logged in the UI): `execute_operation`
runs one approved proposal (operations/executor.py); `escalate_operation` notifies the next approver of a
proposal nobody decided (webhook + e-mail through monitoring.dispatch). Both are launched by the sensor
`operation_proposals` (sensors/operations.py) with one run per proposal (and attempt / escalation level)."""

import datetime as dt
import uuid

import dagster as dg
from pydantic import Field

from assets.resources import PlatformDatabase
from monitoring import dispatch
from operations import executor, proposals, targets


class ExecuteConfig(dg.Config):
    tenant_id: str = Field(description="tenant of the proposal")
    proposal_id: str = Field(description="the approved proposal to execute")


class EscalateConfig(dg.Config):
    tenant_id: str = Field(description="tenant of the proposal")
    proposal_id: str = Field(description="the proposal still waiting for a decision")
    level: int = Field(description="which approver of the tenant's escalation chain (1 = first)")
    as_of: str | None = Field(default=None, description="the sensor tick's time (ISO 8601) that found it due")


# Only an unreachable target is retried (the same idempotency key makes that safe); a changed record or a
# refused write ends the run with the proposal failed, never retried.
@dg.op(description="Execute one approved write operation: re-check the precondition, write with the idempotency "
                   "key, record executed/failed.")
def execute_approved_operation(context: dg.OpExecutionContext, config: ExecuteConfig, db: PlatformDatabase) -> dict:
    tenant_id, proposal_id = uuid.UUID(config.tenant_id), uuid.UUID(config.proposal_id)
    try:
        status = executor.execute(tenant_id, proposal_id, run_id=context.run_id)
    except targets.TargetUnavailable as exc:
        context.log.warning(f"operation {proposal_id}: target unavailable ({exc.message}); retrying")
        raise dg.RetryRequested(max_retries=3, seconds_to_wait=5) from exc
    with db.tenant(tenant_id) as s:
        view = proposals.get(s, proposal_id)
    context.log.info(f"operation {proposal_id} ({view.target}.{view.operation}): {status or view.status}"
                     + (f" — {view.status_reason}" if view.status_reason else ""))
    context.add_output_metadata({"status": view.status, "reason": view.status_reason or "",
                                 "attempts": view.attempts, "result": dg.MetadataValue.json(view.result or {})})
    return {"status": view.status, "reason": view.status_reason}


@dg.op(description="Notify the next approver of a proposal nobody decided (webhook + e-mail).")
def escalate_pending_operation(context: dg.OpExecutionContext, config: EscalateConfig, db: PlatformDatabase) -> dict:
    tenant_id, proposal_id = uuid.UUID(config.tenant_id), uuid.UUID(config.proposal_id)
    now = dt.datetime.fromisoformat(config.as_of) if config.as_of else None
    with db.tenant(tenant_id) as s:
        results = proposals.escalate(s, tenant_id, proposal_id, config.level, dispatch.send, now=now)
    context.log.info(f"operation {proposal_id} escalated to level {config.level}: {', '.join(results) or 'nothing'}")
    context.add_output_metadata({"level": config.level, "deliveries": dg.MetadataValue.json(results)})
    return {"deliveries": results}


@dg.job(description="Execute one approved SAP/MES write operation (launched by the operation_proposals sensor).",
        tags={"eap/domain": "operations"})
def execute_operation() -> None:
    execute_approved_operation()


@dg.job(description="Escalate a write proposal nobody decided to the next approver (launched by the sensor).",
        tags={"eap/domain": "operations"})
def escalate_operation() -> None:
    escalate_pending_operation()


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[execute_operation, escalate_operation])
