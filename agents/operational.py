"""Operational data for agents: typed tools over SAP and MES, the citations of system records, and the
alert root-cause draft written by the agent runtime.

Tools are small typed functions whose docstring is their description (their OpenAI schema comes from
`agents.tools.tool_schema`; the `ctx` parameter is the runtime's, not the model's). Live reads answer
"right now" questions through the tenant's own SAP/MES connection; history and aggregates come from the
SAP extracts and the stored MES observations. Every read goes through the caller's tenant session: the
connection settings and the stored rows are both behind row-level security, so a tenant's agent can only
ever reach its own systems and data.

Each tool result carries the records it was built from (`RecordRef`: system, entity, key, as-of time); an
answer that cites the tool's source gets one record citation per record (`RecordCitation`), next to the
document citations. The skill registry (agents/skills.py) registers one skill per tool with its minimum
role and picks them by rules (`select`); a model may also request them as tool calls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from connectors.mes import MESClient, MESError
from connectors.sap.client import SAPClient, SAPConfig, SAPError
from core.errors import InvalidInput
from core.prompt import prompt_of
from core.repos import operational as repo
from retrieval.search import Caller

log = logging.getLogger(__name__)

_MATERIAL = re.compile(r"\b([A-Za-z]{2,4}-\d{3,6}(?:-[A-Za-z0-9]{1,6})?)\b")
_MACHINE = re.compile(r"\b(M-\d{1,4})\b", re.I)
_PLANT = re.compile(r"\bplant\s+(\d{4})\b", re.I)
_LINE = re.compile(r"\bline\s+(L?\d{1,3})\b", re.I)
_COST_CENTER = re.compile(r"\bcost cent(?:re|er)\s+(\d{3,10})\b", re.I)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,39}$")
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


@dataclass(frozen=True)
class RecordRef:
    """One system record an answer is built on: where it lives and when it was read."""

    system: str  # SAP | MES
    entity: str  # e.g. A_MatlStkInAcctMod, machine, downtime_event
    key: str  # the record's key in that system (OData key predicate for SAP)
    as_of: dt.datetime
    source: str = "live"  # live (read now) | extract (the stored copy)
    title: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "entity": self.entity, "key": self.key, "as_of": self.as_of.isoformat(),
                "source": self.source, "title": self.title or f"{self.system} {self.entity} {self.key}"}


@dataclass(frozen=True)
class RecordCitation:
    """A citation of a system record (kind "record"), numbered like a document citation: `n` is the source
    number of the tool result the record came from."""

    n: int
    record: RecordRef

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "record", "n": self.n, **self.record.as_dict()}


@dataclass
class ToolResult:
    tool: str
    title: str
    text: str
    records: list[RecordRef] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    """What a tool reads through: the caller's tenant session (RLS) and role."""

    session: Session
    caller: Caller


def _num(value: Any) -> str:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    text = format(d.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _safe_id(value: str, what: str) -> str:
    value = value.strip()
    if not _SAFE_ID.match(value):
        raise InvalidInput(f"{what} {value[:40]!r} is not a valid identifier", code="invalid_identifier")
    return value


def _sap(ctx: ToolContext) -> SAPClient:
    cfg = repo.connection(ctx.session, "sap")
    if cfg is None:
        raise InvalidInput("this tenant has no SAP connection", code="sap_not_configured")
    try:
        return SAPClient(SAPConfig.from_tenant(cfg))
    except SAPError as exc:
        raise InvalidInput(exc.message, code=exc.code) from None


def _mes(ctx: ToolContext) -> MESClient:
    cfg = repo.connection(ctx.session, "mes")
    if cfg is None:
        raise InvalidInput("this tenant has no MES connection", code="mes_not_configured")
    return MESClient.from_tenant(cfg)


def _stock_key(material: str, plant: str, sloc: str, batch: str, stock_type: str) -> str:
    return (f"Material='{material}',Plant='{plant}',StorageLocation='{sloc}',Batch='{batch}',"
            f"InventoryStockType='{stock_type}'")


# ------------------------------------------------------------------------------------------- tools


def sap_material_stock(ctx: ToolContext, material: str, plant: str | None = None) -> ToolResult:
    """Current unrestricted stock of a material in SAP, per plant and storage location, read live (for
    "how much do we have right now"). Falls back to the newest stock extract when SAP cannot be reached."""
    material = _safe_id(material, "material").upper()
    plant = _safe_id(plant, "plant") if plant else None
    desc = (repo.material(ctx.session, material) or {}).get("description")
    note = ""
    try:
        read = _sap(ctx).material_stock(material=material, plant=plant)
        rows = [(r.plant, r.storage_location, r.batch, r.stock_type, r.quantity, r.unit) for r in read.records]
        as_of, source = read.as_of, "live"
    except SAPError as exc:
        at, levels = repo.stock_levels(ctx.session, material)
        if at is None:
            raise InvalidInput(f"SAP could not be reached ({exc.message}) and no stock extract exists",
                               code=exc.code) from None
        rows = [(lv["plant"], "*", "", "01", lv["quantity"], lv["unit"]) for lv in levels
                if plant is None or lv["plant"] == plant]
        as_of, source = at, "extract"
        note = f" SAP could not be reached live ({exc.code}); these figures are from the stock extract."
    unrestricted = [r for r in rows if r[3] == "01"]
    name = f"{material} ({desc})" if desc else material
    if not unrestricted:
        text = (f"SAP has no unrestricted stock of {name}{f' at plant {plant}' if plant else ''} "
                f"({'read live' if source == 'live' else 'stock extract'} at {_when(as_of)}).{note}")
        return ToolResult("sap_material_stock", f"SAP stock of {material}", text, [],
                          {"material": material, "total": "0", "source": source})
    unit = unrestricted[0][5]
    total = sum((r[4] for r in unrestricted), Decimal(0))
    parts = [f"plant {p}{'' if sl == '*' else f', storage location {sl}'}"
             f"{f', batch {b}' if b else ''}: {_num(q)} {u}" for p, sl, b, _t, q, u in unrestricted]
    others = [r for r in rows if r[3] != "01"]
    extra = ("; not unrestricted (quality inspection or blocked): "
             + ", ".join(f"plant {p} {sl} type {t}: {_num(q)} {u}" for p, sl, _b, t, q, u in others)) if others else ""
    text = (f"SAP stock of {name}, {'read live' if source == 'live' else 'from the stock extract'} at {_when(as_of)}: "
            f"{_num(total)} {unit} unrestricted in total — " + "; ".join(parts) + f"{extra}.{note}")
    records = [RecordRef("SAP", "A_MatlStkInAcctMod",
                         _stock_key(material, p, sl, b, t) if sl != "*" else f"Material='{material}',Plant='{p}'",
                         as_of, source, f"SAP stock {material} plant {p}{'' if sl == '*' else ' ' + sl}")
               for p, sl, b, t, _q, _u in rows]
    return ToolResult("sap_material_stock", f"SAP stock of {material}", text, records,
                      {"material": material, "total": _num(total), "unit": unit, "source": source,
                       "as_of": as_of.isoformat()})


def sap_stock_history(ctx: ToolContext, material: str, days: int = 30, plant: str | None = None) -> ToolResult:
    """How the unrestricted stock of a material developed, per plant, from the SAP stock extracts of the last
    `days` days (history and trends; not a live read)."""
    material = _safe_id(material, "material").upper()
    days = max(1, min(int(days), 365))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    rows = repo.stock_history(ctx.session, material, since, plant)
    if not rows:
        raise InvalidInput(f"no stock extract of {material} in the last {days} days", code="no_extract_data")
    snaps: dict[dt.datetime, list[dict[str, Any]]] = {}
    for r in rows:
        snaps.setdefault(r["extracted_at"], []).append(r)
    unit = rows[-1]["unit"]
    totals = [(at, sum((Decimal(r["quantity"]) for r in rs), Decimal(0)), rs) for at, rs in snaps.items()]
    lines = [f"{_when(at)}: {_num(total)} {unit} (" + ", ".join(f"plant {r['plant']}: {_num(r['quantity'])}"
                                                              for r in rs) + ")" for at, total, rs in totals[-8:]]
    text = (f"Unrestricted stock of {material}{f' at plant {plant}' if plant else ''} in the SAP extracts of the last "
            f"{days} days ({len(totals)} snapshots, newest 8 shown): " + "; ".join(lines)
            + f". First {_num(totals[0][1])} {unit}, latest {_num(totals[-1][1])} {unit}.")
    records = [RecordRef("SAP", "A_MatlStkInAcctMod", f"Material='{material}',Plant='{r['plant']}'",
                         at, "extract", f"SAP stock extract {material} plant {r['plant']}")
               for at, _t, rs in totals[-8:] for r in rs]
    return ToolResult("sap_stock_history", f"Stock history of {material}", text, records,
                      {"material": material, "snapshots": len(totals)})


def sap_open_purchase_orders(ctx: ToolContext, material: str | None = None) -> ToolResult:
    """Open SAP purchase order items (not completely delivered), optionally for one material, read live:
    supplier, open quantity and delivery date."""
    material = _safe_id(material, "material").upper() if material else None
    client = _sap(ctx)
    try:
        items = client.purchase_order_items(open_only=True, material=material)
        heads = {h.purchase_order: h for h in client.purchase_orders().records}
    except SAPError as exc:
        raise InvalidInput(f"SAP could not be reached: {exc.message}", code=exc.code) from None
    lines, records = [], []
    for i in items.records[:15]:
        h = heads.get(i.purchase_order)
        lines.append(f"PO {i.purchase_order} item {i.item}: {i.text} ({i.material}), {_num(i.open_quantity)} {i.unit} "
                     f"open of {_num(i.quantity)}, due {i.delivery_date:%Y-%m-%d}"
                     f"{f', supplier {h.supplier_name}' if h else ''}")
        records.append(RecordRef("SAP", "A_PurchaseOrderItem", f"PurchaseOrder='{i.purchase_order}',"
                                 f"PurchaseOrderItem='{i.item}'", items.as_of, "live",
                                 f"SAP PO {i.purchase_order}/{i.item}"))
    what = f" for {material}" if material else ""
    if not lines:
        text = f"SAP has no open purchase order items{what} (read live at {_when(items.as_of)})."
    else:
        text = (f"Open SAP purchase order items{what}, read live at {_when(items.as_of)} ({len(items.records)} in "
                f"total{', first 15 shown' if len(items.records) > 15 else ''}): " + "; ".join(lines) + ".")
    return ToolResult("sap_open_purchase_orders", f"Open purchase orders{what}", text, records,
                      {"items": len(items.records)})


def sap_cost_centers(ctx: ToolContext, cost_center: str | None = None) -> ToolResult:
    """Planned and actual costs of SAP cost centres (all, or one), from the cost centre extract."""
    cost_center = _safe_id(cost_center, "cost centre") if cost_center else None
    at, rows = repo.cost_centers(ctx.session, cost_center)
    if at is None or not rows:
        raise InvalidInput("no cost centre extract" + (f" for {cost_center}" if cost_center else ""),
                           code="no_extract_data")
    lines = []
    for r in rows:
        share = (Decimal(r["actual_costs"]) / Decimal(r["planned_costs"]) * 100) if r["planned_costs"] else None
        lines.append(f"cost centre {r['cost_center'].lstrip('0')} {r['name']}: planned {_num(r['planned_costs'])} "
                     f"{r['currency']}, actual {_num(r['actual_costs'])} {r['currency']}"
                     + (f" ({share:.0f}% of plan)" if share is not None else ""))
    text = f"SAP cost centres (extract of {_when(at)}): " + "; ".join(lines) + "."
    records = [RecordRef("SAP", "A_CostCenter", f"ControllingArea='{r['controlling_area']}',"
                         f"CostCenter='{r['cost_center']}'", at, "extract", f"SAP cost centre {r['cost_center']}")
               for r in rows]
    return ToolResult("sap_cost_centers", "Cost centres", text, records, {"cost_centers": len(rows)})


def mes_machine_status(ctx: ToolContext, machine_id: str | None = None) -> ToolResult:
    """Current state of the machines (or one machine) in MES, read live: running, down (since when, why)."""
    machine_id = _safe_id(machine_id, "machine").upper() if machine_id else None
    try:
        status = _mes(ctx).machine_status()
    except MESError as exc:
        raise InvalidInput(f"MES could not be reached: {exc.message}", code=exc.code) from None
    machines = [m for m in status.machines if machine_id is None or m.machine_id == machine_id]
    if not machines:
        raise InvalidInput(f"MES knows no machine {machine_id}", code="unknown_machine")
    lines = []
    for m in machines:
        mins = (status.as_of - m.since).total_seconds() / 60
        lines.append(f"{m.name} ({m.machine_id}, line {m.line}): {m.state}"
                     + (f" for {mins:.0f} min, reason: {m.reason or 'none given'}" if m.state != "RUNNING" else ""))
    text = f"MES machine status at {_when(status.as_of)}: " + "; ".join(lines) + "."
    records = [RecordRef("MES", "machine", m.machine_id, status.as_of, "live", f"MES machine {m.machine_id}")
               for m in machines]
    return ToolResult("mes_machine_status", "Machine status", text, records,
                      {"down": [m.machine_id for m in machines if m.state == "DOWN"]})


def mes_downtime_history(ctx: ToolContext, machine_id: str | None = None, days: int = 7) -> ToolResult:
    """Downtime events recorded from MES in the `days` days up to the newest one (all machines or one), newest
    first."""
    machine_id = _safe_id(machine_id, "machine").upper() if machine_id else None
    days = max(1, min(int(days), 365))
    rows = repo.mes_observations(ctx.session, "downtime", days, machine_id=machine_id)
    if not rows:
        raise InvalidInput(f"no downtime events recorded{f' for {machine_id}' if machine_id else ''}",
                           code="no_mes_data")
    lines = [f"{r['source_id']} {r['payload'].get('machine_id')} from {r['payload'].get('start', '')[:16]}"
             f"{' to ' + r['payload']['end'][:16] if r['payload'].get('end') else ' (still down)'}: "
             f"{r['payload'].get('reason') or 'no reason given'}" for r in rows[:10]]
    reasons = sorted({r["payload"].get("reason") or "unknown" for r in rows})
    text = (f"Downtime events recorded from MES{f' for {machine_id}' if machine_id else ''}: {len(rows)}; "
            f"reasons: {'; '.join(reasons)}. " + "; ".join(lines) + ".")
    records = [RecordRef("MES", "downtime_event", r["source_id"], r["observed_at"], "extract",
                         f"MES downtime {r['source_id']}") for r in rows[:10]]
    return ToolResult("mes_downtime_history", "Downtime history", text, records, {"events": len(rows)})


def mes_quality_history(ctx: ToolContext, line: str | None = None, days: int = 7) -> ToolResult:
    """Quality reports recorded from MES (defect rates per line and hour) in the `days` days up to the newest."""
    line = _safe_id(line, "line").upper() if line else None
    if line and not line.startswith("L"):
        line = f"L{line}"
    days = max(1, min(int(days), 365))
    rows = repo.mes_observations(ctx.session, "quality", days, line=line, limit=12)
    if not rows:
        raise InvalidInput(f"no quality reports recorded{f' for line {line}' if line else ''}", code="no_mes_data")
    rates = [f"{p['defects'] / p['inspected']:.1%}" for p in (r["payload"] for r in rows) if p.get("inspected")]
    newest = rows[0]["payload"]
    text = (f"Recent defect rates on line {line or 'all lines'} (newest first): {', '.join(rates)}. Newest report "
            f"{rows[0]['source_id']}: {newest.get('defects')} defects of {newest.get('inspected')} inspected for "
            f"{newest.get('product')}.")
    records = [RecordRef("MES", "quality_report", r["source_id"], r["observed_at"], "extract",
                         f"MES quality report {r['source_id']}") for r in rows]
    return ToolResult("mes_quality_history", "Quality history", text, records, {"reports": len(rows)})


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


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_citations(answer: str, messages: list[dict[str, Any]], steps: Any) -> list[RecordCitation]:
    """The record citations of an answer: for each [n] that points at a tool result built from system
    records, one citation per record (matched through the digest the skill step stored with its result)."""
    prompt = prompt_of(messages)
    if prompt is None:
        return []
    by_digest: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        result = getattr(step, "result", None)
        if isinstance(result, dict) and result.get("records") and result.get("text_digest"):
            by_digest[result["text_digest"]] = result["records"]
    out: list[RecordCitation] = []
    seen: set[int] = set()
    for m in re.finditer(r"\[(\d{1,2})\]", answer):
        n = int(m.group(1))
        if n in seen or not 1 <= n <= len(prompt.sources):
            continue
        seen.add(n)
        src = prompt.sources[n - 1]
        for rec in by_digest.get(text_digest(src.text), []) if src.tool else []:
            out.append(RecordCitation(n, RecordRef(rec["system"], rec["entity"], rec["key"],
                                                   dt.datetime.fromisoformat(rec["as_of"]), rec["source"],
                                                   rec.get("title", ""))))
    return out


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
