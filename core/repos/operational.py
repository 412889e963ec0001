"""Operational data of the session's tenant: its SAP/MES connection settings, the SAP extracts and the stored
MES observations (migrations 0005 and 0018). Every read runs under the caller's tenant session, so row-level
security limits it to that tenant; nothing here takes a tenant id that could point elsewhere."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

_WORD = re.compile(r"[a-z0-9]{3,}")
_STOP = frozenset({"how", "much", "many", "the", "and", "what", "stock", "inventory", "have", "does", "did", "for",
                   "right", "now", "current", "currently", "our", "plant", "store", "hand", "left", "there",
                   "show", "tell", "level", "levels", "available", "with", "from", "this", "that", "are", "was"})


def connection(session: Session, system: str) -> dict[str, Any] | None:
    """The `sap` or `mes` settings of the session's tenant (None when it has none or no tenant is set)."""
    row = session.execute(text("SELECT settings FROM tenants WHERE id = eap_current_tenant()")).scalar()
    cfg = row.get(system) if isinstance(row, dict) else None
    return cfg if isinstance(cfg, dict) and cfg else None


def last_extract(session: Session, extract: str) -> dt.datetime | None:
    return session.execute(text("SELECT max(extracted_at) FROM sap_extracts WHERE extract = :e"),
                           {"e": extract}).scalar()


def stock_levels(session: Session, material: str | None = None) -> tuple[dt.datetime | None, list[dict[str, Any]]]:
    """Unrestricted stock per material and plant in the newest stock snapshot, with the reorder point."""
    at = last_extract(session, "inventory")
    if at is None:
        return None, []
    rows = session.execute(text(
        "SELECT s.material, s.plant, sum(s.quantity) AS quantity, min(s.unit) AS unit, m.reorder_point, "
        "m.description FROM sap_stock s LEFT JOIN sap_materials m ON m.material = s.material AND m.plant = s.plant "
        "WHERE s.extracted_at = :at AND s.stock_type = '01' AND (CAST(:m AS text) IS NULL OR s.material = :m) "
        "GROUP BY s.material, s.plant, m.reorder_point, m.description ORDER BY s.material, s.plant"),
        {"at": at, "m": material}).mappings().all()
    return at, [dict(r) for r in rows]


def stock_history(session: Session, material: str, since: dt.datetime, plant: str | None = None
                  ) -> list[dict[str, Any]]:
    """Unrestricted stock of a material per snapshot and plant since a time, oldest first."""
    rows = session.execute(text(
        "SELECT extracted_at, plant, sum(quantity) AS quantity, min(unit) AS unit FROM sap_stock "
        "WHERE material = :m AND stock_type = '01' AND extracted_at >= :since "
        "AND (CAST(:p AS text) IS NULL OR plant = :p) GROUP BY extracted_at, plant ORDER BY extracted_at, plant"),
        {"m": material, "since": since, "p": plant}).mappings().all()
    return [dict(r) for r in rows]


def material(session: Session, number: str) -> dict[str, Any] | None:
    row = session.execute(text("SELECT material, description, base_unit, product_type FROM sap_materials "
                               "WHERE material = :m LIMIT 1"), {"m": number}).mappings().first()
    return dict(row) if row else None


def find_material(session: Session, question: str) -> dict[str, Any] | None:
    """The material whose description shares the most words with the question (from the materials extract)."""
    words = [w for w in _WORD.findall(question.lower()) if w not in _STOP]
    if not words:
        return None
    rows = session.execute(text("SELECT DISTINCT material, description, base_unit FROM sap_materials")).mappings()
    best, score = None, 0
    for r in rows:
        desc = set(_WORD.findall(str(r["description"]).lower()))
        s = sum(1 for w in words if w in desc)
        if s > score:
            best, score = dict(r), s
    return best


def open_po_items(session: Session, material: str | None = None) -> tuple[dt.datetime | None, list[dict[str, Any]]]:
    at = last_extract(session, "open_purchase_orders")
    rows = session.execute(text(
        "SELECT * FROM sap_open_po_items WHERE (CAST(:m AS text) IS NULL OR material = :m) "
        "ORDER BY delivery_date, purchase_order, item"), {"m": material}).mappings().all()
    return at, [dict(r) for r in rows]


def cost_centers(session: Session, cost_center: str | None = None) -> tuple[dt.datetime | None, list[dict[str, Any]]]:
    at = last_extract(session, "cost_centers")
    rows = session.execute(text(
        "SELECT * FROM sap_cost_centers WHERE (CAST(:c AS text) IS NULL OR ltrim(cost_center, '0') = ltrim(:c, '0')) "
        "ORDER BY cost_center"), {"c": cost_center}).mappings().all()
    return at, [dict(r) for r in rows]


def mes_observations(session: Session, kind: str, days: int, *, machine_id: str | None = None,
                     line: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Stored MES observations of one kind (newest first) from the `days` before the newest one (MES time,
    not ours: a plant clock or a simulator may differ), optionally for one machine or line."""
    rows = session.execute(text(
        "SELECT source_id, observed_at, payload FROM mes_observations WHERE kind = :k AND observed_at >= "
        "(SELECT max(observed_at) FROM mes_observations WHERE kind = :k) - make_interval(days => :days) "
        "AND (CAST(:mid AS text) IS NULL OR payload->>'machine_id' = :mid) "
        "AND (CAST(:line AS text) IS NULL OR payload->>'line' = :line) "
        "ORDER BY observed_at DESC LIMIT :n"),
        {"k": kind, "days": days, "mid": machine_id, "line": line, "n": limit}).mappings().all()
    return [dict(r) for r in rows]
