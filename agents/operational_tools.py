"""The typed SAP and MES read tools of the operational agents (see agents/operational.py for how they are
chosen and run). Each is a small typed function whose docstring is its description (its OpenAI schema comes
from `agents.tools.tool_schema`; `ctx` is the runtime's, not the model's). Live reads go through the tenant's
own SAP/MES connection; history and aggregates come from the SAP extracts and the stored MES observations,
both behind row-level security. Each result carries the records it was built from (agents/operational_records.py);
a read that found nothing carries the entity set and filter it searched, so its answer is still cited.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from agents.operational_records import RecordRef, ToolContext, ToolResult
from connectors.mes import MESClient, MESError
from connectors.sap.client import SAPClient, SAPConfig, SAPError
from core.errors import InvalidInput
from core.repos import operational as repo

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,39}$")


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
        searched = RecordRef("SAP", "A_MatlStkInAcctMod", f"Material='{material}'"
                             + (f",Plant='{plant}'" if plant else ""), as_of, source,
                             f"SAP stock {material}: no unrestricted stock")
        return ToolResult("sap_material_stock", f"SAP stock of {material}", text, [searched],
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
        searched = "open items" + (f", Material='{material}'" if material else "")
        records.append(RecordRef("SAP", "A_PurchaseOrderItem", searched, items.as_of, "live",
                                 f"SAP open PO items{what}: none"))
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

