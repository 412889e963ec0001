"""A user's request to change something in MES or SAP becomes a *proposal* (operations/proposals.py), never a
write: the chat answer shows what would change (current → new), the risk and how many approvals it needs, and
says that nothing was executed. The write happens only after a different person with the approver permission
approves it, in the Dagster job `execute_operation`.

Recognised by rules, so the same request gives the same proposal whatever model is configured (a model never
decides whether something is written).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.deps import AgentDeps
from agents.trace import SkillStep, Trace, ms_since
from core.errors import PlatformError
from operations import proposals

SKILL = "propose_operation"
_ID = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,38}[A-Za-z0-9])"
_WORK_ORDER = re.compile(
    r"^\s*(?:please\s+)?(?:create|open|raise|log)\s+(?:a\s+|an\s+)?(?:(high|low|normal)[- ]priority\s+)?"
    rf"(?:maintenance\s+)?work\s*order\s+for\s+(?:machine\s+)?{_ID}\s*(?:[:,]\s*|\s+-\s+|\s+to\s+)(.{{3,500}}?)\s*[.!]?\s*$",
    re.I | re.S)
_HOLD = re.compile(
    rf"^\s*(?:please\s+)?(?:put|place|set)\s+(?:machine\s+)?{_ID}\s+on\s+hold\s*(?:because|due to|for|[:,]|\s-)\s*"
    r"(.{3,300}?)\s*[.!]?\s*$", re.I | re.S)
_RELEASE = re.compile(
    rf"^\s*(?:please\s+)?(?:release|lift|remove)\s+(?:the\s+)?hold\s+(?:on|of|from)\s+(?:machine\s+)?{_ID}"
    r"\s*(?:because|[:,]|\s-)\s*(.{3,300}?)\s*[.!]?\s*$", re.I | re.S)

_REQUISITION = re.compile(
    r"^\s*(?:please\s+)?(?:create|raise|open)\s+(?:a\s+)?(?:purchase\s+requisition|PR)\s+for\s+"
    r"(\d{1,9}(?:\.\d{1,3})?)\s*([A-Za-z]{1,3})\s+(?:of\s+)?(?:material\s+)?([A-Za-z0-9][A-Za-z0-9_.-]{0,39})\s+"
    r"(?:at|for|in)\s+plant\s+([A-Za-z0-9]{4})\s*[.!]?\s*$", re.I)
_RESERVATION = re.compile(
    r"^\s*(?:please\s+)?(?:change|set|update)\s+(?:the\s+)?(?:quantity\s+of\s+)?(?:SAP\s+)?reservation\s+"
    r"(?:item\s+)?(\d{1,10})\s*(?:/|\s+item\s+)\s*(\d{1,4})\s+to\s+(\d{1,9}(?:\.\d{1,3})?)\s*[.!]?\s*$", re.I)


@dataclass(frozen=True)
class Request:
    target: str
    operation: str
    payload: dict[str, Any]


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Request]], ...] = (
    (_WORK_ORDER, lambda m: Request("mes", "create_work_order", {
        "machine_id": m.group(2), "description": m.group(3).strip(), "priority": (m.group(1) or "normal").lower()})),
    (_HOLD, lambda m: Request("mes", "hold_machine", {"machine_id": m.group(1), "hold": True,
                                                      "reason": m.group(2).strip()})),
    (_RELEASE, lambda m: Request("mes", "hold_machine", {"machine_id": m.group(1), "hold": False,
                                                         "reason": m.group(2).strip()})),
    (_REQUISITION, lambda m: Request("sap", "create_purchase_requisition", {
        "quantity": m.group(1), "unit": m.group(2).upper(), "material": m.group(3), "plant": m.group(4)})),
    (_RESERVATION, lambda m: Request("sap", "update_reservation_item", {
        "reservation": m.group(1), "item": m.group(2), "quantity": m.group(3)})),
)


def parse(message: str) -> Request | None:
    """The write a message asks for, or None when it asks for none."""
    for pattern, build in _RULES:
        m = pattern.match(message)
        if m:
            return build(m)
    return None


@dataclass(frozen=True)
class Proposed:
    text: str
    proposal: proposals.ProposalView | None


def _fmt(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def render(p: proposals.ProposalView) -> str:
    lines = [f"I have not changed anything. I created proposal {p.id} for approval: {p.summary}.", "",
             f"Proposed change ({p.target.upper()}, {p.risk} risk, {p.required_approvals} approval(s) needed "
             f"from someone other than you with the approver permission):"]
    for c in p.preview.get("changes", []):
        lines.append(f"- {c.get('field')}: {_fmt(c.get('current'))} → {_fmt(c.get('new'))}")
    if p.approval_note:
        lines += ["", f"Warning: {p.approval_note}."]
    elif p.eligible_approvers:
        lines += ["", f"Who can approve it: {', '.join(p.eligible_approvers)}."]
    lines += ["", f"Status: {p.status.upper()} — nothing is written to {p.target.upper()} until it is approved; it "
                  f"expires at {p.expires_at.isoformat(timespec='minutes')} if nobody decides. Follow it at "
                  f"GET /v1/operations/{p.id}."]
    return "\n".join(lines)


def handle(deps: AgentDeps, message: str, trace: Trace) -> Proposed | None:
    """A write request → a stored proposal and the answer that shows it (None when the message asks for no
    write). A proposal that cannot be made (unknown machine, MES not configured or unreachable, role too low)
    is answered with the reason; nothing is proposed then."""
    req = parse(message)
    if req is None or deps.tenant_id is None:
        return None
    t = time.perf_counter()
    try:
        view = proposals.propose(deps.session, tenant_id=deps.tenant_id, actor=deps.caller.subject,
                                 actor_role=deps.caller.role, target=req.target, operation=req.operation,
                                 payload=req.payload, source="chat", settings=deps.settings)
    except PlatformError as exc:
        trace.append(SkillStep(ms=ms_since(t), tool=SKILL, args={"target": req.target, "operation": req.operation,
                                                                 "payload": req.payload},
                               denied=exc.code, reason=exc.message))
        return Proposed(f"I could not propose this change, and nothing was changed: {exc.message}", None)
    trace.append(SkillStep(ms=ms_since(t), tool=SKILL, args={"target": req.target, "operation": req.operation,
                                                             "payload": req.payload},
                           result={"proposal_id": str(view.id), "status": view.status, "risk": view.risk,
                                   "required_approvals": view.required_approvals}))
    return Proposed(render(view), view)
