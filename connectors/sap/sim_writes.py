"""The write targets of the SAP simulator (connectors/sap/simulator.py), with SAP's validations and
messages: typed coercion of a JSON body against the entity type, purchase requisitions and reservations
created by deep insert (header + items), and reservation items changed with If-Match against their ETag.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from decimal import Decimal
from typing import Any

from connectors.sap.schema import EntityType, Service
from connectors.sap.sim_data import PLANTS, STORAGE_LOCATIONS, SimState
from connectors.sap.sim_entities import entity_json, etag
from connectors.sap.sim_odata import ODataFault


def coerce(etype: EntityType, body: dict[str, Any], allowed: tuple[str, ...] | None = None
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name == "__metadata" or any(n.name == name for n in etype.navs):
            continue
        try:
            p = etype.prop(name)
        except KeyError:
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/004",
                             f"Property '{name}' is invalid for entity type '{etype.name}'") from None
        if allowed is not None and name not in allowed:
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", f"Property '{name}' cannot be changed")
        if value is None:
            out[name] = None
            continue
        try:
            if p.type == "Edm.Decimal":
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    raise ValueError(value)
                out[name] = Decimal(str(value))
                if not out[name].is_finite():
                    raise ValueError(value)
            elif p.type == "Edm.DateTime":
                m = re.fullmatch(r"/Date\((-?\d+)\)/", str(value))
                if not m:
                    raise ValueError(value)
                out[name] = dt.datetime.fromtimestamp(int(m.group(1)) / 1000, dt.UTC)
            elif p.type == "Edm.Boolean":
                if not isinstance(value, bool):
                    raise ValueError(value)
                out[name] = value
            else:
                if not isinstance(value, str) or (p.max_length and len(value) > p.max_length):
                    raise ValueError(value)
                out[name] = value
        except (ValueError, decimal.InvalidOperation):
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/004",
                             f"Invalid value for property '{name}' ({p.type})") from None
    return out


def _items(body: dict[str, Any], nav: str) -> list[dict[str, Any]]:
    raw = body.get(nav)
    if isinstance(raw, dict):
        raw = raw.get("results")
    if not isinstance(raw, list) or not raw or not all(isinstance(i, dict) for i in raw):
        raise ODataFault(400, "06/402", f"At least one item is required ({nav})")
    return raw


def _check_material(state: SimState, material: Any, plant: Any, unit: Any) -> None:
    prod = next((p for p in state.rows("API_PRODUCT_SRV", "A_Product") if p["Product"] == material), None)
    if prod is None:
        raise ODataFault(400, "M3/305", f"Material {material} does not exist")
    if plant not in PLANTS:
        raise ODataFault(400, "M3/351", f"Plant {plant} does not exist")
    if unit is not None and unit != prod["BaseUnit"]:
        raise ODataFault(400, "M3/347", f"Unit {unit} is not the base unit {prod['BaseUnit']} of {material}")


def create_purchase_requisition(state: SimState, svc: Service, body: dict[str, Any], user: str) -> dict[str, Any]:
    head_t, item_t = svc.by_set("A_PurchaseRequisitionHeader"), svc.by_set("A_PurchaseRequisitionItem")
    head = coerce(head_t, body)
    raw_items = _items(body, "to_PurchaseReqnItem")
    items = [coerce(item_t, i) for i in raw_items]
    for it in items:
        _check_material(state, it.get("Material"), it.get("Plant"), it.get("BaseUnit"))
        qty = it.get("RequestedQuantity")
        if qty is None or qty <= 0:
            raise ODataFault(400, "06/216", "Enter a requested quantity greater than zero")
    heads = state.rows(svc.name, head_t.set_name)
    number = f"00100{len(heads) + 1:05d}"
    head.update(PurchaseRequisition=number, CreationDate=state.now.replace(hour=0, minute=0, second=0,
                                                                                 microsecond=0))
    head.setdefault("PurchaseRequisitionType", "NB")
    heads.append(head)
    rows = state.rows(svc.name, item_t.set_name)
    made = []
    for n, it in enumerate(items, start=1):
        unit = it.get("BaseUnit") or next(p["BaseUnit"] for p in state.rows("API_PRODUCT_SRV", "A_Product")
                                           if p["Product"] == it["Material"])
        row = {**it, "PurchaseRequisition": number, "PurchaseRequisitionItem": f"{n * 10:05d}",
               "BaseUnit": unit, "CreatedByUser": user[:12], "ProcessingStatus": "N",
               "LastChangeDateTime": state.stamp()}
        rows.append(row)
        made.append(row)
    return {"head": head, "items": made}


def create_reservation(state: SimState, svc: Service, body: dict[str, Any]) -> dict[str, Any]:
    head_t, item_t = svc.by_set("A_ReservationDocumentHeader"), svc.by_set("A_ReservationDocumentItem")
    head = coerce(head_t, body)
    items = [coerce(item_t, i) for i in _items(body, "to_ReservationDocumentItem")]
    if head.get("GoodsMovementType") not in ("201", "261", "311"):
        raise ODataFault(400, "M7/165", f"Movement type {head.get('GoodsMovementType')} is not allowed")
    if head.get("GoodsMovementType") == "201":
        ccs = {r["CostCenter"] for r in state.rows("API_COSTCENTER_SRV", "A_CostCenter")}
        if head.get("CostCenter") not in ccs:
            raise ODataFault(400, "KI/235", f"Cost center {head.get('CostCenter')} does not exist")
    for it in items:
        _check_material(state, it.get("Product"), it.get("Plant"), it.get("BaseUnit"))
        if it.get("StorageLocation") not in STORAGE_LOCATIONS:
            raise ODataFault(400, "M7/018", f"Storage location {it.get('StorageLocation')} does not exist")
        qty = it.get("ResvnItmRequiredQtyInBaseUnit")
        if qty is None or qty <= 0:
            raise ODataFault(400, "M7/021", "Enter a quantity greater than zero")
        if it.get("MatlCompRequirementDate") is None:  # SAP defaults the requirement date to today
            it["MatlCompRequirementDate"] = state.now.replace(hour=0, minute=0, second=0, microsecond=0)
    return state.insert_reservation(head, items)



def post(state: SimState, svc: Service, etype: EntityType, body: bytes, base: str, user: str
         ) -> tuple[int, Any, dict[str, str]]:
    """A deep insert (header + items) into a creatable entity set → 201 with the created document."""
    if not etype.creatable:
        raise ODataFault(405, "/IWBEP/CM_MGW_RT/005", f"Entity set {etype.set_name} is not creatable")
    data = _json_object(body or b"")
    if etype.set_name == "A_PurchaseRequisitionHeader":
        made, nav = create_purchase_requisition(state, svc, data, user), "to_PurchaseReqnItem"
    else:
        made, nav = create_reservation(state, svc, data), "to_ReservationDocumentItem"
    item_t = svc.by_type(etype.navs[0].target)
    d = entity_json(svc, etype, made["head"], base)
    d[nav] = {"results": [entity_json(svc, item_t, i, base) for i in made["items"]]}
    return 201, {"d": d}, {"location": d["__metadata"]["uri"]}


def update(state: SimState, etype: EntityType, row: dict[str, Any], if_match: str | None, body: bytes
           ) -> dict[str, str]:
    """PATCH/MERGE/PUT of an entity's updatable properties, only with the current ETag in If-Match (428
    without one, 412 when it changed); returns the headers of the 204 (the new ETag)."""
    if not etype.updatable:
        raise ODataFault(405, "/IWBEP/CM_MGW_RT/006", f"Entity set {etype.set_name} is not updatable")
    current = etag(etype, row)
    if not if_match:
        raise ODataFault(428, "/IWBEP/CM_MGW_RT/025", "Precondition required: send If-Match with the ETag")
    if if_match not in ("*", current):
        raise ODataFault(412, "/IWBEP/CM_MGW_RT/022",
                         "The entity was changed by another user; read it again (ETag mismatch)")
    changes = _json_object(body or b"{}")
    changes = {k: v for k, v in changes.items() if k not in etype.keys or v == row.get(k)}
    coerced = coerce(etype, {k: v for k, v in changes.items() if k not in etype.keys}, allowed=etype.updatable)
    qty = coerced.get("ResvnItmRequiredQtyInBaseUnit")
    if qty is not None and qty <= 0:
        raise ODataFault(400, "M7/021", "Enter a quantity greater than zero")
    row.update(coerced)
    row["LastChangeDateTime"] = state.stamp()
    return {"etag": etag(etype, row) or ""}


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "Malformed JSON body") from None
    if not isinstance(data, dict):
        raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "The body must be a JSON object")
    return data
