"""Proposals and their state machine.

    proposed ──approve (enough approvals)──▶ approved ──claim──▶ executing ──▶ executed | failed
        │──reject──▶ rejected     │──cancel (proposer/admin)──▶ cancelled     │──past expiry──▶ expired

Nobody executes a write directly: a person (API) or an agent on a user's request (chat) *proposes* it; the
proposal stores the operation, its validated payload, a preview read from the target (current → new), the
precondition execution re-checks, a risk level, the proposer and an expiry. An approver is a different
person holding the `approver` permission; high-risk operations need two approvals. Approved proposals are
executed by the Dagster job `execute_operation` (operations/executor.py). A proposal nobody decided
escalates every `escalate_after_minutes` to the next approver of its chain and expires at its expiry.

The chain of approvers (operations/approvers.py) is not configuration text: it is the tenant's active users a
tenant admin granted the `approver` permission (identity/users.py, users.permissions), in the order they were
granted an account, without the proposer and without anyone who already decided. Each escalation e-mails the
next of them and posts to the tenant's escalation webhooks (tenant settings "operations": timings and webhooks
only). A proposal nobody can approve (no eligible approver, or fewer than its risk requires) says so in its
view and in the chat answer, and its escalation reports it instead of notifying a person. Every transition is
an audit record (`operation.*`) in the same transaction.

Functions taking a Session run in the caller's transaction under the tenant's RLS; `now` is a parameter
everywhere time matters, so tests drive a simulated clock.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session

from compliance import audit
from core.enums import Permission, Role
from core.errors import Conflict, Forbidden, NotFound
from core.repos import tenants
from core.security import Principal
from core.settings import Settings
from operations import targets

# The approver chain and the policy live in operations/approvers.py; re-exported for the routes and executor.
from operations.approvers import Approver as Approver
from operations.approvers import OperationsPolicy as OperationsPolicy
from operations.approvers import _note
from operations.approvers import approvers as approvers
from operations.approvers import chain_for as chain_for
from operations.approvers import policy as policy
from operations.approvers import set_policy as set_policy

OPEN = "proposed"
TERMINAL = frozenset({"rejected", "expired", "cancelled", "executed", "failed"})
APPROVALS_BY_RISK = {"low": 1, "medium": 1, "high": 2}


class ProposalView(BaseModel):
    """A proposal as the API and the chat show it."""

    id: uuid.UUID
    target: str
    operation: str
    title: str
    summary: str
    payload: dict[str, Any]
    preview: dict[str, Any]
    risk: str
    required_approvals: int
    approvals: list[dict[str, Any]]
    proposer: str
    source: str
    status: str
    status_reason: str | None
    expires_at: dt.datetime
    # Who may still approve it (DB grants, minus the proposer and those who decided) and, when that is not
    # enough for the approvals it still needs, why nobody can complete it.
    eligible_approvers: list[str] = []
    approval_note: str | None = None
    escalation_level: int
    attempts: int
    result: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    executed_at: dt.datetime | None


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _audit(session: Session, tenant_id: uuid.UUID, actor: str, role: str | None, action: str,
           proposal_id: uuid.UUID, outcome: str = "success", **details: Any) -> None:
    audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=role, action=f"operation.{action}",
                 resource_type="operation", resource_id=str(proposal_id), outcome=outcome, details=details)


def _row(session: Session, proposal_id: uuid.UUID, *, lock: bool = False) -> RowMapping:
    row = session.execute(text("SELECT * FROM operation_proposals WHERE id = :i" + (" FOR UPDATE" if lock else "")),
                          {"i": str(proposal_id)}).mappings().first()
    if row is None:
        raise NotFound("operation proposal not found", code="proposal_not_found")
    return row


def _approvals(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    if not ids:
        return out
    for a in session.execute(text("SELECT proposal_id, approver, approver_role, decision, reason, created_at "
                                  "FROM operation_approvals WHERE proposal_id = ANY(:ids) ORDER BY created_at"),
                             {"ids": [str(i) for i in ids]}).mappings():
        out.setdefault(a["proposal_id"], []).append(
            {"approver": a["approver"], "role": a["approver_role"], "decision": a["decision"], "reason": a["reason"],
             "at": a["created_at"].isoformat()})
    return out


def _view(row: RowMapping, approvals: list[dict[str, Any]], chain: Sequence[Approver]) -> ProposalView:
    preview = row["preview"] or {}
    eligible: list[str] = []
    note = None
    if row["status"] == OPEN:
        eligible = [a.username for a in chain_for(chain, row["proposer"], [a["approver"] for a in approvals])]
        note = _note(len(eligible), int(row["required_approvals"])
                     - sum(1 for a in approvals if a["decision"] == "approve"))
    return ProposalView(
        id=row["id"], target=row["target"], operation=row["operation"], title=preview.get("title", ""),
        summary=preview.get("summary", ""), payload=row["payload"], preview=preview, risk=row["risk"],
        required_approvals=row["required_approvals"], approvals=approvals, proposer=row["proposer"],
        source=row["source"], status=row["status"], status_reason=row["status_reason"], expires_at=row["expires_at"],
        eligible_approvers=eligible, approval_note=note, escalation_level=row["escalation_level"],
        attempts=row["attempts"], result=row["result"],
        created_at=row["created_at"], updated_at=row["updated_at"], executed_at=row["executed_at"])


def get(session: Session, proposal_id: uuid.UUID) -> ProposalView:
    row = _row(session, proposal_id)
    return _view(row, _approvals(session, [row["id"]]).get(row["id"], []), approvers(session))


def list_proposals(session: Session, status: str | None = None, limit: int = 100) -> list[ProposalView]:
    q = "SELECT * FROM operation_proposals" + (" WHERE status = :s" if status else "") + \
        " ORDER BY created_at DESC LIMIT :n"
    rows = list(session.execute(text(q), {"s": status, "n": limit}).mappings())
    approvals = _approvals(session, [r["id"] for r in rows])
    chain = approvers(session)
    return [_view(r, approvals.get(r["id"], []), chain) for r in rows]


def propose(session: Session, *, tenant_id: uuid.UUID, actor: str, actor_role: str, target: str, operation: str,
            payload: dict[str, Any], source: str = "api", now: dt.datetime | None = None,
            settings: Settings | None = None) -> ProposalView:
    """Validate the payload, read the current values from the target, store the proposal (audited). Nothing
    is written to the target."""
    spec = targets.spec_for(target, operation)
    if Role.rank_of(actor_role) < Role(spec.min_role).rank:
        raise Forbidden(f"proposing {spec.key} needs the {spec.min_role} role", code="insufficient_role")
    p = targets.validate(spec, payload)
    current = spec.read(tenants.settings(session, tenant_id), p)
    at = _now(now)
    pol = policy(session, tenant_id, settings)
    risk = spec.risk(p)
    pid, key = uuid.uuid4(), f"eap-op-{uuid.uuid4()}"
    preview = {"title": spec.title, "summary": spec.summary(p), "subject": spec.subject(p),
               "changes": spec.changes(p, current), "current": current.values,
               "read_at": at.isoformat()}
    session.execute(text(
        "INSERT INTO operation_proposals (id, tenant_id, target, operation, payload, preview, precondition, risk, "
        "required_approvals, proposer, proposer_role, source, status, idempotency_key, expires_at, created_at, "
        "updated_at) VALUES (:id, :t, :target, :op, CAST(:payload AS jsonb), CAST(:preview AS jsonb), "
        "CAST(:pre AS jsonb), :risk, :req, :who, :role, :src, 'proposed', :key, :exp, :now, :now)"),
        {"id": str(pid), "t": str(tenant_id), "target": target, "op": operation,
         "payload": p.model_dump_json(), "preview": json.dumps(preview, default=str),
         "pre": json.dumps(current.precondition, default=str), "risk": risk, "req": APPROVALS_BY_RISK[risk],
         "who": actor, "role": actor_role, "src": source, "key": key, "exp": at + pol.expiry, "now": at})
    view = get(session, pid)
    _audit(session, tenant_id, actor, actor_role, "propose", pid, to="proposed", target=target, operation=operation,
           risk=risk, source=source, summary=preview["summary"], changes=preview["changes"],
           eligible_approvers=view.eligible_approvers, approval_note=view.approval_note)
    return view


def _transition(session: Session, row: RowMapping, status: str, now: dt.datetime, reason: str | None = None,
                **extra: Any) -> None:
    sets = ", ".join(["status = :s", "status_reason = :r", "updated_at = :now"] + [f"{k} = :{k}" for k in extra])
    session.execute(text(f"UPDATE operation_proposals SET {sets} WHERE id = :i"),
                    {"s": status, "r": reason, "now": now, "i": str(row["id"]), **extra})


def _expire_if_due(session: Session, row: RowMapping, now: dt.datetime) -> bool:
    if row["status"] == OPEN and row["expires_at"] <= now:
        _transition(session, row, "expired", now, "not decided before its expiry")
        _audit(session, row["tenant_id"], "operations", "system", "expire", row["id"], **{"from": OPEN},
               to="expired", expires_at=row["expires_at"].isoformat())
        return True
    return False


def _decide_checks(session: Session, principal: Principal, proposal_id: uuid.UUID, now: dt.datetime,
                   action: str) -> RowMapping:
    row = _row(session, proposal_id, lock=True)
    if row["status"] == OPEN and row["expires_at"] <= now:  # the sweep records the expiry itself
        raise Conflict("the proposal expired before it was decided", code="proposal_expired")
    if row["status"] != OPEN:
        raise Conflict(f"the proposal is {row['status']}, not proposed", code="proposal_not_open")
    if not principal.has(Permission.approver):
        raise Forbidden(f"to {action} an operation you need the approver permission", code="approver_required")
    if principal.subject == row["proposer"]:
        raise Forbidden(f"the proposer cannot {action} their own proposal", code="own_proposal")
    done = session.execute(text("SELECT 1 FROM operation_approvals WHERE proposal_id = :i AND approver = :a"),
                           {"i": str(proposal_id), "a": principal.subject}).first()
    if done is not None:
        raise Conflict("you already decided on this proposal", code="already_decided")
    return row


def _deny(principal: Principal, proposal_id: uuid.UUID, action: str, exc: Exception) -> None:
    audit.record_detached(principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                          action=f"operation.{action}", resource_type="operation", resource_id=str(proposal_id),
                          outcome="denied", details={"code": getattr(exc, "code", type(exc).__name__),
                                                     "reason": getattr(exc, "message", str(exc))})


def _decide(session: Session, principal: Principal, proposal_id: uuid.UUID, at: dt.datetime, decision: str,
            reason: str | None) -> RowMapping:
    """Record `principal`'s decision (approve | reject) on the open proposal, after the checks (a refusal is
    audited as denied and raised); returns the locked proposal row."""
    try:
        row = _decide_checks(session, principal, proposal_id, at, decision)
    except (Forbidden, Conflict) as exc:
        _deny(principal, proposal_id, decision, exc)
        raise
    session.execute(text("INSERT INTO operation_approvals (tenant_id, proposal_id, approver, approver_role, decision, "
                         "reason, created_at) VALUES (:t, :i, :a, :r, :d, :why, :now)"),
                    {"t": str(principal.tenant_id), "i": str(proposal_id), "a": principal.subject,
                     "r": principal.role.value, "d": decision, "why": reason, "now": at})
    return row


def approve(session: Session, principal: Principal, proposal_id: uuid.UUID, reason: str | None = None,
            now: dt.datetime | None = None) -> ProposalView:
    """One approval; the proposal becomes `approved` when it has as many as its risk requires."""
    at = _now(now)
    row = _decide(session, principal, proposal_id, at, "approve", reason)
    count = session.execute(text("SELECT count(*) FROM operation_approvals WHERE proposal_id = :i "
                                 "AND decision = 'approve'"), {"i": str(proposal_id)}).scalar_one()
    complete = count >= row["required_approvals"]
    if complete:
        _transition(session, row, "approved", at, None, decided_at=at)
    _audit(session, principal.tenant_id, principal.subject, principal.role.value, "approve", proposal_id,
           **{"from": OPEN}, to="approved" if complete else OPEN, approvals=int(count),
           required=row["required_approvals"], reason=reason)
    return get(session, proposal_id)


def reject(session: Session, principal: Principal, proposal_id: uuid.UUID, reason: str | None = None,
           now: dt.datetime | None = None) -> ProposalView:
    at = _now(now)
    row = _decide(session, principal, proposal_id, at, "reject", reason)
    _transition(session, row, "rejected", at, reason or f"rejected by {principal.subject}", decided_at=at)
    _audit(session, principal.tenant_id, principal.subject, principal.role.value, "reject", proposal_id,
           **{"from": OPEN}, to="rejected", reason=reason)
    return get(session, proposal_id)


def cancel(session: Session, principal: Principal, proposal_id: uuid.UUID, reason: str | None = None,
           now: dt.datetime | None = None) -> ProposalView:
    """The proposer (or a tenant admin) withdraws a proposal that has not started executing."""
    at = _now(now)
    row = _row(session, proposal_id, lock=True)
    if principal.subject != row["proposer"] and principal.role != Role.admin:
        exc = Forbidden("only the proposer or an admin can cancel a proposal", code="not_proposer")
        _deny(principal, proposal_id, "cancel", exc)
        raise exc
    if row["status"] not in (OPEN, "approved"):
        raise Conflict(f"the proposal is {row['status']} and cannot be cancelled", code="proposal_not_cancellable")
    _transition(session, row, "cancelled", at, reason or f"cancelled by {principal.subject}")
    _audit(session, principal.tenant_id, principal.subject, principal.role.value, "cancel", proposal_id,
           **{"from": row["status"]}, to="cancelled", reason=reason)
    return get(session, proposal_id)


# --------------------------------------------------------------------------- time: expiry and escalation


@dataclass(frozen=True)
class DueEscalation:
    tenant_id: uuid.UUID
    proposal_id: uuid.UUID
    level: int  # the escalation this is (1: the first approver of the chain)


def sweep(session: Session, tenant_id: uuid.UUID, now: dt.datetime | None = None,
          settings: Settings | None = None) -> tuple[int, list[DueEscalation]]:
    """Expire the tenant's proposals past their expiry (audited) and list those due for escalation: the n-th
    escalation is due n × escalate_after after the proposal, while its chain (`chain_for`) has an n-th
    approver; a proposal nobody can approve is due once, to report that."""
    at = _now(now)
    pol = policy(session, tenant_id, settings)
    rows = list(session.execute(text("SELECT * FROM operation_proposals WHERE status = 'proposed' FOR UPDATE"))
                .mappings())
    chain = approvers(session)
    decided = _approvals(session, [r["id"] for r in rows])
    expired, due = 0, []
    for row in rows:
        if _expire_if_due(session, row, at):
            expired += 1
            continue
        level = int(row["escalation_level"]) + 1
        eligible = chain_for(chain, row["proposer"], [a["approver"] for a in decided.get(row["id"], [])])
        if level <= max(len(eligible), 1) and row["created_at"] + level * pol.escalate_after <= at:
            due.append(DueEscalation(tenant_id, row["id"], level))
    return expired, due


Sender = Callable[[dict[str, Any], str, str, dict[str, Any]], list[tuple[str, str, bool, int, str | None]]]


def escalate(session: Session, tenant_id: uuid.UUID, proposal_id: uuid.UUID, level: int, send: Sender,
             now: dt.datetime | None = None, settings: Settings | None = None) -> list[str]:
    """Notify the `level`-th approver of the proposal's chain (e-mail, and the tenant's escalation webhooks, through
    `send`, monitoring.dispatch.send) about a proposal still waiting, and record it (audited). With nobody left
    who may approve it, the webhooks are told that instead and the escalation is audited as a failure with
    the reason. Returns "channel:delivered|dead_letter" per target; nothing when the proposal was decided
    meanwhile or this level was already sent."""
    at = _now(now)
    row = _row(session, proposal_id, lock=True)
    if row["status"] != OPEN or int(row["escalation_level"]) >= level:
        return []
    pol = policy(session, tenant_id, settings)
    chain = chain_for(approvers(session), row["proposer"],
                      [a["approver"] for a in _approvals(session, [row["id"]]).get(row["id"], [])])
    if level > max(len(chain), 1):
        return []
    approver = chain[level - 1] if chain else None
    preview = row["preview"] or {}
    summary = preview.get("summary", row["operation"])
    title = f"[APPROVAL NEEDED] {summary}" if approver else f"[NO APPROVER] {summary}"
    waited = int((at - row["created_at"]).total_seconds() // 60)
    nobody = ("" if approver else "\n\nNobody can approve it: no active user other than the proposer holds the "
              "approver permission. A tenant admin must grant it (PATCH /v1/admin/users/{id}) before it expires.")
    body = (f"{title}\n\nProposed by {row['proposer']} {waited} minutes ago ({row['risk']} risk, "
            f"{row['required_approvals']} approval(s) needed); expires {row['expires_at'].isoformat()}.\n"
            f"Changes: " + "; ".join(f"{c.get('field')}: {c.get('current')} → {c.get('new')}"
                                     for c in preview.get("changes", [])) +
            f"\n\nApprove or reject: POST /v1/operations/{proposal_id}/approve (or /reject).{nobody}")
    payload = {"title": title, "text": body, "severity": "warning" if approver else "critical",
               "operation": {"id": str(proposal_id), "target": row["target"], "operation": row["operation"],
                             "risk": row["risk"], "proposer": row["proposer"], "escalation_level": level,
                             "approver": approver.username if approver else None,
                             "expires_at": row["expires_at"].isoformat()}}
    emails = [approver.email] if approver and approver.email else []
    results = send({"webhooks": list(pol.webhooks), "emails": emails}, title, body, payload)
    session.execute(text("UPDATE operation_proposals SET escalation_level = :l, escalated_at = :now, updated_at = :now "
                         "WHERE id = :i"), {"l": level, "now": at, "i": str(proposal_id)})
    reason = None if approver else "no_eligible_approver"
    if approver and not emails:
        reason = "approver_has_no_email"
    _audit(session, tenant_id, "operations", "system", "escalate", proposal_id,
           outcome="success" if reason is None else "failure", level=level,
           approver=approver.username if approver else None, reason=reason,
           deliveries=[{"channel": c, "delivered": ok, "attempts": n, "error": err} for c, _t, ok, n, err in results])
    return [f"{c}:{'delivered' if ok else 'dead_letter'}" for c, _t, ok, _n, _e in results]
