"""Operational data for agents: which SAP/MES tool answers a request, running it for the caller, and the
alert root-cause draft written by the agent runtime.

The module is split by concern (each under 400 lines):
- agents/operational_tools.py: the typed SAP and MES read tools (live reads; extracts and stored observations
  for history and aggregates), every read through the caller's tenant session under row-level security, so a
  tenant's agent only ever reaches its own systems and data;
- agents/operational_records.py: what answers cite (`RecordRef`, `RecordCitation`) and `record_citations`,
  which resolves every "[n]" pointing at a tool source (SAP/MES record, SQL Guard query, calculation);
- this module: the skill table (`SKILLS`: tool, minimum role, the runner that reads the request in words),
  the rule-based choice (`select`) and `alert_root_cause`. The names of the other two are re-exported here,
  so `agents.operational.<name>` keeps working for callers.

The skill registry (agents/skills.py) registers one skill per tool with its minimum role; a model may also
request them as tool calls.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from agents.operational_records import (
    RecordCitation,
    RecordRef,
    ToolContext,
    ToolResult,
    record_citations,
    text_digest,
)
from agents.operational_tools import (
    _when,
    mes_downtime_history,
    mes_machine_status,
    mes_quality_history,
    sap_cost_centers,
    sap_material_stock,
    sap_open_purchase_orders,
    sap_stock_history,
)
from core.errors import InvalidInput
from core.repos import operational as repo
from retrieval.search import Caller

__all__ = ["SKILLS", "USERS", "RecordCitation", "RecordRef", "ToolContext", "ToolResult", "alert_root_cause",
           "mes_downtime_history", "mes_machine_status", "mes_quality_history", "record_citations", "run_skill",
           "sap_cost_centers", "sap_material_stock", "sap_open_purchase_orders", "sap_stock_history", "select",
           "text_digest"]

log = logging.getLogger(__name__)

_MATERIAL = re.compile(r"\b([A-Za-z]{2,4}-\d{3,6}(?:-[A-Za-z0-9]{1,6})?)\b")
_MACHINE = re.compile(r"\b(M-\d{1,4})\b", re.I)
_PLANT = re.compile(r"\bplant\s+(\d{4})\b", re.I)
_LINE = re.compile(r"\bline\s+(L?\d{1,3})\b", re.I)
_COST_CENTER = re.compile(r"\bcost cent(?:re|er)\s+(\d{3,10})\b", re.I)
_HISTORY = re.compile(r"\b(trend|history|historical|develop\w*|over the (?:last|past)|last (?:week|month|\d+ days)|"
                      r"past|since|changed|average)\b", re.I)
_STOCK = re.compile(r"\b(stock|inventory|on hand|in store|how much|how many|available|reorder)\b", re.I)
_PO = re.compile(r"\b(purchase orders?|open orders?|on order|\bpos?\b|incoming deliver\w*)\b", re.I)
_COST = re.compile(r"\b(cost cent(?:re|er)s?|spend\w*|budget)\b", re.I)
_MACHINE_STATE = re.compile(r"\b(machine status|status of|is (?:the )?\S+ (?:down|running)|down right now|"
                            r"running right now|which machines|machines? (?:are|is) down)\b", re.I)
_DOWNTIME = re.compile(r"\bdowntime|stoppages?\b", re.I)
_QUALITY = re.compile(r"\b(defect rate|scrap rate|quality reports?|reject rate)\b", re.I)
USERS = ("data_analyst", "maintenance_advisor", "quality_inspector")  # the specialists that use these tools


# ------------------------------------------------------------------------------------------- skills


def _material_in(ctx: ToolContext, question: str) -> str:
    m = _MATERIAL.search(question)
    if m and not _MACHINE.fullmatch(m.group(1)):
        return m.group(1).upper()
    found = repo.find_material(ctx.session, question)
    if found is None:
        raise InvalidInput("no material named in the request", code="no_material")
    return str(found["material"])


def _plant_in(question: str) -> str | None:
    m = _PLANT.search(question)
    return m.group(1) if m else None


def _days_in(question: str, default: int) -> int:
    m = re.search(r"\b(\d{1,3})\s*days?\b", question)
    if m:
        return int(m.group(1))
    if re.search(r"\bmonth\b", question, re.I):
        return 30
    if re.search(r"\bweek\b", question, re.I):
        return 7
    return default


def _machine_in(question: str) -> str | None:
    m = _MACHINE.search(question)
    return m.group(1).upper() if m else None


Runner = Callable[[ToolContext, str], ToolResult]
# name → (tool, minimum role, runner parsing the request in words)
SKILLS: dict[str, tuple[Callable[..., ToolResult], str, Runner]] = {
    "sap_material_stock": (sap_material_stock, "viewer",
                           lambda c, q: sap_material_stock(c, _material_in(c, q), _plant_in(q))),
    "sap_stock_history": (sap_stock_history, "viewer",
                          lambda c, q: sap_stock_history(c, _material_in(c, q), _days_in(q, 30), _plant_in(q))),
    "sap_open_purchase_orders": (sap_open_purchase_orders, "viewer", lambda c, q: sap_open_purchase_orders(
        c, _material_in(c, q) if _MATERIAL.search(q) else None)),
    # Costs are financial data: operators and admins only.
    "sap_cost_centers": (sap_cost_centers, "operator", lambda c, q: sap_cost_centers(
        c, (m.group(1) if (m := _COST_CENTER.search(q)) else None))),
    "mes_machine_status": (mes_machine_status, "viewer", lambda c, q: mes_machine_status(c, _machine_in(q))),
    "mes_downtime_history": (mes_downtime_history, "viewer",
                             lambda c, q: mes_downtime_history(c, _machine_in(q), _days_in(q, 7))),
    "mes_quality_history": (mes_quality_history, "viewer", lambda c, q: mes_quality_history(
        c, (m.group(1) if (m := _LINE.search(q)) else None), _days_in(q, 7))),
}


def run_skill(name: str, session: Session, caller: Caller, request: str) -> ToolResult:
    """Run one operational skill on a request in words (the registry has checked the role)."""
    return SKILLS[name][2](ToolContext(session, caller), request)


def select(specialist: str, question: str) -> str | None:
    """Rule-based choice of an operational tool for the Data Analyst, Maintenance Advisor and Quality
    Inspector: an identifier (material, machine, line, cost centre) or an operational noun decides."""
    if specialist not in USERS:
        return None
    from agents import sql_questions

    if sql_questions.match(question) is not None:
        return None  # an aggregate over the reporting views: the SQL Guard answers it
    history = bool(_HISTORY.search(question))
    if _COST.search(question):
        return "sap_cost_centers"
    if _PO.search(question):
        return "sap_open_purchase_orders"
    if _STOCK.search(question) and (_MATERIAL.search(question) or re.search(r"\b(stock|inventory)\b", question, re.I)):
        return "sap_stock_history" if history else "sap_material_stock"
    if _QUALITY.search(question):
        return "mes_quality_history"
    if _DOWNTIME.search(question):
        return "mes_downtime_history"
    if _MACHINE_STATE.search(question) or (_MACHINE.search(question) and re.search(
            r"\b(down|running|status|state|stopped|right now)\b", question, re.I)):
        return "mes_machine_status"
    return None


# ------------------------------------------------------------------------------------------- alerts


def alert_root_cause(tenant_id: uuid.UUID, breach: Any, *, model: Any = None) -> str:
    """The root-cause draft of an alert, written by the agent runtime: the MES/SAP evidence read by the
    operational tools, then the specialist's answer over that evidence and the documents (routed, retrieved
    with an operator's access, generated through the Model seam, verified). `breach` is a
    monitoring.rules.Breach (kind, subject, message, context)."""
    from agents import orchestrator
    from agents.deps import build_deps
    from core.db.database import tenant_session

    ctx_data: dict[str, Any] = dict(getattr(breach, "context", {}) or {})
    kind, subject, message = breach.kind, breach.subject, breach.message
    if kind == "downtime_minutes":
        question = (f"Why is {ctx_data.get('machine') or subject} ({subject}) down with "
                    f"{ctx_data.get('reason') or 'an unplanned stop'}? What is the likely root cause and what "
                    "should maintenance check?")
        evidence: Callable[[ToolContext], ToolResult] = lambda c: mes_downtime_history(c, subject, 30)  # noqa: E731
    elif kind == "defect_rate":
        question = (f"What is the root cause of the defect rate on line {subject} for {ctx_data.get('product', '')} "
                    "and which corrective action should quality take?")
        evidence = lambda c: mes_quality_history(c, subject, 7)  # noqa: E731
    else:
        material = str(ctx_data.get("material") or subject.split("@")[0])
        question = f"Why is the stock of {material} below its minimum and what is on order?"
        evidence = lambda c: sap_open_purchase_orders(c, material)  # noqa: E731
    lines = [f"Root-cause draft (written by the agent runtime from operational data and documents; verify before "
             f"acting): {message}."]
    with tenant_session(tenant_id) as s:
        deps = build_deps(s, subject="alert-monitor", role="operator", tenant_id=tenant_id, model=model)
        try:
            ev = evidence(ToolContext(s, deps.access))
            lines.append(f"Evidence: {ev.text}")
            lines += [f"- {r.system} {r.entity} {r.key} (as of {_when(r.as_of)})" for r in ev.records[:5]]
        except InvalidInput as exc:
            lines.append(f"Evidence: {exc.message}.")
        out = orchestrator.run(deps, question, [])
        lines.append(f"Analysis ({out.specialist.replace('_', ' ')}, {out.outcome}): {out.text}")
        docs = [f"- {c.title}{f' p.{c.page}' if c.page else ''}" for c in out.citations]
        if docs:
            lines.append("Documents cited:")
            lines += docs
    return "\n".join(lines)
