"""Executing an approved proposal: claim → perform → finish, each step its own transaction (the Dagster job
`execute_operation` runs them; nothing else does).

- `claim` moves `approved` → `executing` (audited) and counts the attempt. A proposal already `executing`
  (its earlier run died, or the target was unreachable) is claimed again as a *resumed* attempt.
- `perform` re-checks the precondition against the target (the record the approver saw must not have changed:
  otherwise the operation fails with the reason, nothing is overwritten) and writes with the proposal's
  idempotency key. A resumed attempt sends the same key, so if the earlier attempt wrote before it crashed,
  the target answers with that first result and writes nothing again.
- `finish` records `executed` (with the target's result) or `failed` (with the reason), audited.

A transient failure (target unreachable, 5xx) leaves the proposal `executing` and raises TargetUnavailable:
the job retries it, and the sensor resumes stale executions; after `operations_max_attempts` it fails.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from compliance import audit
from core.db.database import tenant_session
from core.repos import tenants
from core.settings import get_settings
from operations import targets

ACTOR = "operations-executor"


@dataclass(frozen=True)
class Claim:
    tenant_id: uuid.UUID
    proposal_id: uuid.UUID
    target: str
    operation: str
    payload: dict[str, Any]
    precondition: dict[str, Any]
    idempotency_key: str
    proposer: str
    attempt: int
    resumed: bool


@dataclass(frozen=True)
class Performed:
    ok: bool
    result: dict[str, Any]
    reason: str | None = None
    replayed: bool = False


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def claim(tenant_id: uuid.UUID, proposal_id: uuid.UUID, run_id: str | None = None,
          now: dt.datetime | None = None) -> Claim | None:
    """Claim an approved (or interrupted) proposal for execution; None when there is nothing to execute."""
    at = _now(now)
    with tenant_session(tenant_id) as s:
        row = s.execute(text("SELECT * FROM operation_proposals WHERE id = :i FOR UPDATE"),
                        {"i": str(proposal_id)}).mappings().first()
        if row is None or row["status"] not in ("approved", "executing"):
            return None
        resumed = row["status"] == "executing"
        attempt = int(row["attempts"]) + 1
        s.execute(text("UPDATE operation_proposals SET status = 'executing', attempts = :n, claimed_at = :now, "
                       "run_id = :run, updated_at = :now WHERE id = :i"),
                  {"n": attempt, "now": at, "run": run_id, "i": str(proposal_id)})
        audit.record(s, tenant_id=tenant_id, actor=ACTOR, actor_role="system",
                     action="operation.execute_resume" if resumed else "operation.execute_start",
                     resource_type="operation", resource_id=str(proposal_id),
                     details={"from": row["status"], "to": "executing", "attempt": attempt, "run_id": run_id})
        return Claim(tenant_id, proposal_id, row["target"], row["operation"], row["payload"], row["precondition"],
                     row["idempotency_key"], row["proposer"], attempt, resumed)


def perform(c: Claim) -> Performed:
    """Re-check and write. Raises TargetUnavailable (retry is safe); a changed record or a refused write is a
    failed Performed with the reason."""
    spec = targets.spec_for(c.target, c.operation)
    with tenant_session(c.tenant_id) as s:
        cfg = tenants.settings(s, c.tenant_id)
    payload = targets.validate(spec, c.payload)
    try:
        done = spec.execute(cfg, payload, c.precondition, c.idempotency_key, c.proposer, c.resumed)
    except targets.PreconditionFailed as exc:
        return Performed(False, {"code": exc.code}, exc.message)
    except targets.TargetNotConfigured as exc:
        return Performed(False, {"code": exc.code}, exc.message)
    return Performed(True, done.result, None, done.replayed)


def finish(c: Claim, outcome: Performed, now: dt.datetime | None = None) -> str:
    at = _now(now)
    status = "executed" if outcome.ok else "failed"
    with tenant_session(c.tenant_id) as s:
        s.execute(text("UPDATE operation_proposals SET status = :s, status_reason = :r, result = CAST(:res AS jsonb), "
                       "executed_at = :ex, updated_at = :now WHERE id = :i AND status = 'executing'"),
                  {"s": status, "r": outcome.reason, "res": _json(outcome.result), "ex": at if outcome.ok else None,
                   "now": at, "i": str(c.proposal_id)})
        audit.record(s, tenant_id=c.tenant_id, actor=ACTOR, actor_role="system", action=f"operation.{status}",
                     resource_type="operation", resource_id=str(c.proposal_id),
                     outcome="success" if outcome.ok else "failure",
                     details={"from": "executing", "to": status, "attempt": c.attempt, "reason": outcome.reason,
                              "replayed": outcome.replayed, "result": outcome.result,
                              "idempotency_key": c.idempotency_key})
    return status


def give_up(c: Claim, reason: str, now: dt.datetime | None = None) -> str:
    """After the last attempt: failed, saying the outcome at the target is unknown and how to check it."""
    return finish(c, Performed(False, {"code": "target_unavailable"},
                               f"{reason}; gave up after {c.attempt} attempts — the write may or may not have reached "
                               f"{c.target}: look for idempotency key {c.idempotency_key}"), now)


def execute(tenant_id: uuid.UUID, proposal_id: uuid.UUID, run_id: str | None = None,
            now: dt.datetime | None = None) -> str | None:
    """claim → perform → finish. Returns the final status, or None if there was nothing to execute. Raises
    TargetUnavailable when the target could not be reached and attempts remain (the caller retries)."""
    c = claim(tenant_id, proposal_id, run_id, now)
    if c is None:
        return None
    try:
        outcome = perform(c)
    except targets.TargetUnavailable as exc:
        if c.attempt >= get_settings().operations_max_attempts:
            return give_up(c, exc.message, now)
        raise
    return finish(c, outcome, now)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def executable(now: dt.datetime | None = None, stale_after_s: float | None = None
               ) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """(tenant, proposal, attempts) of every approved proposal, and of every execution claimed more than
    `stale_after_s` ago that never finished (its run died), across tenants (the sensor's system view)."""
    from core.db.database import system_session

    at = _now(now)
    stale = at - dt.timedelta(seconds=stale_after_s if stale_after_s is not None
                              else get_settings().operations_stale_execution_s)
    with system_session() as s:
        rows = s.execute(text("SELECT tenant_id, id, attempts FROM operation_proposals WHERE status = 'approved' "
                              "OR (status = 'executing' AND claimed_at < :stale) ORDER BY updated_at"),
                         {"stale": stale}).all()
    return [(r.tenant_id, r.id, int(r.attempts)) for r in rows]


def tenants_with_open_proposals() -> list[uuid.UUID]:
    from core.db.database import system_session

    with system_session() as s:
        return list(s.execute(text("SELECT DISTINCT tenant_id FROM operation_proposals WHERE status = 'proposed'"))
                    .scalars())
