"""SAP extracts per tenant: read through the SAP client (connectors/sap), store under the tenant's RLS,
check their quality, and evaluate the `inventory_below_min` rules on the stock extract.

A tenant is connected to SAP by its `sap` settings (`PUT`-able like `mes`, see `configure_sap`):
`{"base_url", "username", "password_env", "sap_client", "timeout_s", "retries"}`. The password itself is
never stored in the database (the settings are audited): `password_env` names the environment variable of
the platform processes that holds it (default EAP_SAP_PASSWORD).

Stock is kept as snapshots (history: "how did the stock of X develop"); materials, open purchase order
items and cost centres are the current state, replaced by each extract. `sap_extracts` logs each
successful extract: its time is the as-of time of the data and of a record citation.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from connectors.sap.client import SAPClient, SAPConfig
from connectors.sap.models import ALLOWED_UNITS, SAPRead
from core.db.database import system_session, tenant_session
from core.models import Tenant
from core.repos import operational

EXTRACTS = ("inventory", "open_purchase_orders", "materials", "cost_centers")
TABLES = {"inventory": "sap_stock", "open_purchase_orders": "sap_open_po_items", "materials": "sap_materials",
          "cost_centers": "sap_cost_centers"}
ALLOWED_CURRENCIES = frozenset({"EUR", "USD", "CZK", "PLN", "CHF", "GBP", "HUF", "CNY", "JPY"})


def tenants_with_sap() -> list[tuple[uuid.UUID, str, dict[str, Any]]]:
    with system_session() as s:
        rows = s.execute(select(Tenant.id, Tenant.name, Tenant.settings)).all()
    return [(tid, name, st["sap"]) for tid, name, st in rows if isinstance(st, dict) and st.get("sap")]


def client_for(cfg: dict[str, Any]) -> SAPClient:
    return SAPClient(SAPConfig.from_tenant(cfg))


def configure_sap(tenant_id: uuid.UUID, cfg: dict[str, Any], *, actor: str, actor_role: str) -> dict[str, Any]:
    """Point a tenant's SAP extracts and agent tools at its SAP Gateway (audited; no password inside)."""
    from identity.tenancy import set_tenant_setting

    if "password" in cfg:
        raise ValueError("the SAP password is not stored in the tenant settings: set password_env")
    return set_tenant_setting(tenant_id, "sap", cfg, actor=actor, actor_role=actor_role)


@dataclass
class ExtractResult:
    tenant_id: uuid.UUID
    extract: str
    rows: int
    pages: int
    as_of: dt.datetime
    source: str
    duration_ms: float


def _log(s: Session, tenant_id: uuid.UUID, extract: str, read: SAPRead[Any], rows: int, pages: int,
         duration_ms: float) -> ExtractResult:
    s.execute(text("INSERT INTO sap_extracts (tenant_id, extract, extracted_at, rows, pages, source, duration_ms) "
                   "VALUES (:t, :e, :at, :r, :p, :src, :ms)"),
              {"t": tenant_id, "e": extract, "at": read.as_of, "r": rows, "p": pages, "src": read.url,
               "ms": duration_ms})
    return ExtractResult(tenant_id, extract, rows, pages, read.as_of, read.url, duration_ms)


def extract_inventory(tenant_id: uuid.UUID, client: SAPClient) -> ExtractResult:
    t = time.perf_counter()
    read = client.material_stock()
    rows = [{"t": tenant_id, "at": read.as_of, "m": r.material, "p": r.plant, "sl": r.storage_location,
             "b": r.batch, "st": r.stock_type, "q": r.quantity, "u": r.unit} for r in read.records]
    with tenant_session(tenant_id) as s:
        if rows:
            s.execute(text("INSERT INTO sap_stock (tenant_id, extracted_at, material, plant, storage_location, batch, "
                           "stock_type, quantity, unit) VALUES (:t, :at, :m, :p, :sl, :b, :st, :q, :u)"), rows)
        return _log(s, tenant_id, "inventory", read, len(rows), read.pages, (time.perf_counter() - t) * 1000)


def _replace(tenant_id: uuid.UUID, extract: str, read: SAPRead[Any], insert_sql: str, rows: list[dict[str, Any]],
             t0: float, pages: int) -> ExtractResult:
    with tenant_session(tenant_id) as s:
        s.execute(text(f"DELETE FROM {TABLES[extract]}"))  # RLS: only this tenant's rows
        if rows:
            s.execute(text(insert_sql), rows)
        return _log(s, tenant_id, extract, read, len(rows), pages, (time.perf_counter() - t0) * 1000)


def extract_materials(tenant_id: uuid.UUID, client: SAPClient) -> ExtractResult:
    t = time.perf_counter()
    products = client.products()
    plants = client.product_plants()
    by_id = {p.product: p for p in products.records}
    rows = []
    for pp in plants.records:
        prod = by_id.get(pp.product)
        if prod is None:
            continue  # plant data of a material outside the product read: the quality check counts products
        rows.append({"t": tenant_id, "at": products.as_of, "m": pp.product, "p": pp.plant, "d": prod.description,
                     "pt": prod.product_type, "pg": prod.product_group, "u": prod.base_unit,
                     "rp": pp.reorder_point, "ss": pp.safety_stock})
    return _replace(tenant_id, "materials", products,
                    "INSERT INTO sap_materials (tenant_id, extracted_at, material, plant, description, product_type, "
                    "product_group, base_unit, reorder_point, safety_stock) VALUES (:t, :at, :m, :p, :d, :pt, :pg, "
                    ":u, :rp, :ss)", rows, t, products.pages + plants.pages)


def extract_open_purchase_orders(tenant_id: uuid.UUID, client: SAPClient) -> ExtractResult:
    t = time.perf_counter()
    items = client.purchase_order_items(open_only=True)
    heads = {h.purchase_order: h for h in client.purchase_orders().records}
    rows = []
    for i in items.records:
        h = heads.get(i.purchase_order)
        if h is None:
            continue
        rows.append({"t": tenant_id, "at": items.as_of, "po": i.purchase_order, "it": i.item, "s": h.supplier,
                     "sn": h.supplier_name, "m": i.material, "p": i.plant, "tx": i.text, "q": i.quantity,
                     "r": i.received, "oq": i.open_quantity, "u": i.unit, "np": i.net_price, "c": i.currency,
                     "od": h.order_date, "dd": i.delivery_date})
    return _replace(tenant_id, "open_purchase_orders", items,
                    "INSERT INTO sap_open_po_items (tenant_id, extracted_at, purchase_order, item, supplier, "
                    "supplier_name, material, plant, text, quantity, received, open_quantity, unit, net_price, "
                    "currency, order_date, delivery_date) VALUES (:t, :at, :po, :it, :s, :sn, :m, :p, :tx, :q, :r, "
                    ":oq, :u, :np, :c, :od, :dd)", rows, t, items.pages)


def extract_cost_centers(tenant_id: uuid.UUID, client: SAPClient) -> ExtractResult:
    t = time.perf_counter()
    read = client.cost_centers()
    rows = [{"t": tenant_id, "at": read.as_of, "ca": c.controlling_area, "cc": c.cost_center, "n": c.name,
             "d": c.description, "cat": c.category, "r": c.responsible, "cur": c.currency, "pl": c.planned_costs,
             "ac": c.actual_costs} for c in read.records]
    return _replace(tenant_id, "cost_centers", read,
                    "INSERT INTO sap_cost_centers (tenant_id, extracted_at, controlling_area, cost_center, name, "
                    "description, category, responsible, currency, planned_costs, actual_costs) VALUES (:t, :at, :ca, "
                    ":cc, :n, :d, :cat, :r, :cur, :pl, :ac)", rows, t, read.pages)


EXTRACTORS: dict[str, Callable[[uuid.UUID, SAPClient], ExtractResult]] = {
    "inventory": extract_inventory, "open_purchase_orders": extract_open_purchase_orders,
    "materials": extract_materials, "cost_centers": extract_cost_centers,
}


# ------------------------------------------------------------------------------------------- reads


def latest_rows(tenant_id: uuid.UUID, extract: str) -> list[dict[str, Any]]:
    """The extract as the quality checks see it: the newest stock snapshot, or the current table."""
    table = TABLES[extract]
    where = " WHERE extracted_at = (SELECT max(extracted_at) FROM sap_stock)" if extract == "inventory" else ""
    with tenant_session(tenant_id) as s:
        res = s.execute(text(f"SELECT * FROM {table}{where}"))
        return [dict(r._mapping) for r in res]


def evaluate_inventory(tenant_id: uuid.UUID) -> tuple[list[Any], set[tuple[str, str]], dt.datetime | None]:
    """The tenant's inventory_below_min rules over its newest stock snapshot → (breaches that need an alert,
    cleared (rule, subject) pairs, snapshot time). Alerts whose condition cleared are resolved."""
    from monitoring.polling import _auto_resolve, _needs_action, _open_subjects, load_rules
    from monitoring.rules import evaluate_inventory as rule_eval

    rules = [r for r in load_rules(tenant_id) if r.kind == "inventory_below_min"]
    if not rules:
        return [], set(), None
    with tenant_session(tenant_id) as s:
        at, levels = operational.stock_levels(s)
    if at is None:
        return [], set(), None
    breaches, cleared = rule_eval(rules, levels, at)
    open_alerts = _open_subjects(tenant_id)
    _auto_resolve(tenant_id, cleared, open_alerts)
    return [b for b in breaches if _needs_action(b, open_alerts)], cleared, at


__all__ = ["ALLOWED_CURRENCIES", "ALLOWED_UNITS", "EXTRACTORS", "EXTRACTS", "ExtractResult", "client_for",
           "configure_sap", "evaluate_inventory", "latest_rows", "tenants_with_sap"]
