"""The operations a proposal may name, per target system: how the payload is validated, what the change
looks like to the approver (current values read from the system at proposal time → new values), its risk
level, and how it is executed — re-checking the precondition first and sending an idempotency key, so a
changed record fails the operation instead of being overwritten and a retried execution cannot write twice.

Targets are configured per tenant in the tenant settings: "mes" (PUT /v1/integrations/mes, the same
endpoint the monitoring polls) and "sap" (base_url, username, password_env: connectors/sap/client.SAPConfig).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from connectors.mes import MachineDetail, MESClient, MESError
from connectors.sap.models import QuantityIn, UnitIn
from core.errors import InvalidInput, PlatformError


class TargetUnavailable(PlatformError):
    """The target system could not be reached or answered with a server error: retrying (with the same
    idempotency key) is safe."""

    code = "target_unavailable"
    status_code = 502


class PreconditionFailed(PlatformError):
    """The record changed since the proposal (or the target refused the write): the operation fails with this
    reason and is not retried."""

    code = "precondition_failed"
    status_code = 409


class TargetNotConfigured(InvalidInput):
    code = "target_not_configured"


@dataclass(frozen=True)
class Current:
    """What the target holds now: the values shown in the preview, and the precondition execution re-checks."""

    values: dict[str, Any]
    precondition: dict[str, Any]


@dataclass(frozen=True)
class Executed:
    result: dict[str, Any]
    replayed: bool = False  # the target answered a repeated idempotency key: nothing was written again


@dataclass(frozen=True)
class OperationSpec:
    target: str
    name: str
    title: str
    min_role: str
    payload: type[BaseModel]
    risk: Callable[[Any], str]
    read: Callable[[dict[str, Any], Any], Current]
    changes: Callable[[Any, Current], list[dict[str, Any]]]
    summary: Callable[[Any], str]
    execute: Callable[[dict[str, Any], Any, dict[str, Any], str, str, bool], Executed]
    subject: Callable[[Any], str] = field(default=lambda p: "")

    @property
    def key(self) -> str:
        return f"{self.target}.{self.name}"


# --------------------------------------------------------------------------- MES


class WorkOrderIn(BaseModel):
    machine_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    description: str = Field(min_length=3, max_length=500)
    priority: Literal["low", "normal", "high"] = "normal"


class HoldIn(BaseModel):
    machine_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    hold: bool = True
    reason: str = Field(min_length=3, max_length=300)


def _mes(cfg: dict[str, Any]) -> MESClient:
    mes = cfg.get("mes")
    if not isinstance(mes, dict) or not mes.get("base_url"):
        raise TargetNotConfigured("this tenant has no MES configured (PUT /v1/integrations/mes)")
    return MESClient(str(mes["base_url"]), timeout_s=float(mes.get("timeout_s", 5)),
                     retries=int(mes.get("retries", 2)), backoff_s=float(mes.get("backoff_s", 0.2)))


def _machine(cfg: dict[str, Any], machine_id: str) -> tuple[MachineDetail, str]:
    try:
        return _mes(cfg).machine(machine_id)
    except MESError as exc:
        if exc.code == "mes_not_found":
            raise InvalidInput(exc.message, code="unknown_record") from None
        raise TargetUnavailable(exc.message) from None


def _machine_values(m: MachineDetail) -> dict[str, Any]:
    return {"machine_id": m.machine_id, "line": m.line, "name": m.name, "state": m.state, "reason": m.reason,
            "hold": m.hold, "hold_reason": m.hold_reason}


def _read_machine(cfg: dict[str, Any], p: WorkOrderIn | HoldIn) -> Current:
    m, etag = _machine(cfg, p.machine_id)
    values = _machine_values(m)
    return Current(values, {"etag": etag, "values": values})


def _changed(before: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in keys if before.get(k) != now.get(k)]


def _write(call: Callable[[], Any], what: str) -> Executed:
    try:
        res = call()
    except MESError as exc:
        if exc.code == "precondition_failed":
            raise PreconditionFailed(f"{what}: the record changed since it was checked (MES refused If-Match)",
                                     code="precondition_failed") from None
        if exc.code == "mes_unavailable":
            raise TargetUnavailable(exc.message) from None
        raise PreconditionFailed(f"{what}: MES refused the write: {exc.message}", code=exc.code) from None
    return Executed(res.body, res.replayed)


def _exec_work_order(cfg: dict[str, Any], p: WorkOrderIn, pre: dict[str, Any], key: str, proposer: str,
                     resumed: bool) -> Executed:
    # A work order does not change the machine, so the state it was proposed for is re-checked on every
    # attempt; the write carries the ETag just read (If-Match) and the idempotency key.
    m, etag = _machine(cfg, p.machine_id)
    diff = _changed(pre.get("values", {}), _machine_values(m), ("state", "hold"))
    if diff:
        raise PreconditionFailed(f"machine {p.machine_id} changed since the proposal: {'; '.join(diff)}")
    return _write(lambda: _mes(cfg).create_work_order(p.machine_id, p.description, p.priority,
                                                      idempotency_key=key, if_match=etag, requested_by=proposer),
                  f"work order for {p.machine_id}")


def _exec_hold(cfg: dict[str, Any], p: HoldIn, pre: dict[str, Any], key: str, proposer: str,
               resumed: bool) -> Executed:
    if not resumed:
        m, etag = _machine(cfg, p.machine_id)
        if etag != pre.get("etag"):
            diff = _changed(pre.get("values", {}), _machine_values(m),
                            ("state", "reason", "hold", "hold_reason", "line", "name"))
            raise PreconditionFailed(f"machine {p.machine_id} changed since the proposal: "
                                     f"{'; '.join(diff) or 'ETag differs'}")
    # A resumed attempt (the previous one may have written before it crashed) sends the same key with the
    # proposal's ETag: the MES answers the first result again, or refuses if the machine changed meanwhile.
    return _write(lambda: _mes(cfg).set_hold(p.machine_id, p.hold, p.reason if p.hold else None,
                                             idempotency_key=key, if_match=str(pre.get("etag"))),
                  f"hold of {p.machine_id}")


REGISTRY: dict[str, OperationSpec] = {}


def register(spec: OperationSpec) -> OperationSpec:
    REGISTRY[spec.key] = spec
    return spec


register(OperationSpec(
    target="mes", name="create_work_order", title="Create a maintenance work order", min_role="viewer",
    payload=WorkOrderIn, risk=lambda p: "medium" if p.priority == "high" else "low", read=_read_machine,
    changes=lambda p, cur: [
        {"field": "work order", "current": None, "new": f"{p.description} (priority {p.priority})"},
        {"field": f"machine {p.machine_id} state", "current": cur.values.get("state"),
         "new": cur.values.get("state")}],
    summary=lambda p: f"Open a {p.priority}-priority maintenance work order for machine {p.machine_id}: "
                      f"{p.description}",
    execute=_exec_work_order, subject=lambda p: p.machine_id))
register(OperationSpec(
    target="mes", name="hold_machine", title="Put a machine on hold (or release it)", min_role="operator",
    payload=HoldIn, risk=lambda p: "high" if p.hold else "medium", read=_read_machine,
    changes=lambda p, cur: [
        {"field": "hold", "current": cur.values.get("hold"), "new": p.hold},
        {"field": "hold_reason", "current": cur.values.get("hold_reason"), "new": p.reason if p.hold else None}],
    summary=lambda p: (f"Put machine {p.machine_id} on hold: {p.reason}" if p.hold
                       else f"Release the hold on machine {p.machine_id}: {p.reason}"),
    execute=_exec_hold, subject=lambda p: p.machine_id))


# --------------------------------------------------------------------------- SAP (connectors/sap/client.py)


class ReservationChangeIn(BaseModel):
    reservation: str = Field(pattern=r"^[0-9A-Za-z]{1,10}$")
    item: str = Field(pattern=r"^[0-9]{1,4}$")
    quantity: QuantityIn


class RequisitionIn(BaseModel):
    material: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    plant: str = Field(pattern=r"^[A-Za-z0-9]{4}$")
    quantity: QuantityIn  # SAP's quantity and unit constraints, as the client validates them
    unit: UnitIn
    text: str | None = Field(default=None, max_length=40)


def _sap(cfg: dict[str, Any]) -> Any:
    from connectors.sap.client import SAPClient, SAPConfig, SAPError

    sap = cfg.get("sap")
    if not isinstance(sap, dict) or not sap.get("base_url"):
        raise TargetNotConfigured("this tenant has no SAP connection configured")
    try:
        return SAPClient(SAPConfig.from_tenant(sap))
    except SAPError as exc:
        raise TargetNotConfigured(exc.message) from None


def _sap_call(fn: Callable[[], Any], what: str) -> Any:
    """A SAP call with its failures mapped: unreachable/garbage → TargetUnavailable (retried with the same
    precondition), a changed record → PreconditionFailed, any other refusal → PreconditionFailed (not retried)."""
    from connectors.sap.client import SAPBadResponse, SAPError, SAPNotFound, SAPPreconditionFailed, SAPRejected

    try:
        return fn()
    except SAPPreconditionFailed:
        raise PreconditionFailed(f"{what}: the record changed since it was read (SAP refused the ETag)") from None
    except SAPNotFound as exc:
        raise InvalidInput(f"{what}: {exc.message}", code="unknown_record") from None
    except SAPRejected as exc:
        raise PreconditionFailed(f"{what}: SAP refused it: {exc.message}", code=exc.code) from None
    except (SAPBadResponse, SAPError) as exc:
        if exc.code in ("sap_auth_failed", "sap_not_configured"):
            raise PreconditionFailed(f"{what}: {exc.message}", code=exc.code) from None
        raise TargetUnavailable(f"{what}: {exc.message}") from None


def _reservation_values(item: Any) -> dict[str, Any]:
    return {"material": item.material, "plant": item.plant, "storage_location": item.storage_location,
            "quantity": str(item.quantity), "unit": item.unit, "finally_issued": item.finally_issued}


def _read_reservation(cfg: dict[str, Any], p: ReservationChangeIn) -> Current:
    client = _sap(cfg)
    item = _sap_call(lambda: client.reservation_item(p.reservation, p.item), f"reservation {p.reservation}/{p.item}")
    values = _reservation_values(item)
    return Current(values, {"etag": item.etag, "values": values})


def _exec_reservation(cfg: dict[str, Any], p: ReservationChangeIn, pre: dict[str, Any], key: str, proposer: str,
                      resumed: bool) -> Executed:
    from connectors.sap.models import ReservationItemChange

    what = f"reservation item {p.reservation}/{p.item}"
    client = _sap(cfg)
    item = _sap_call(lambda: client.reservation_item(p.reservation, p.item), what)
    if item.etag != pre.get("etag"):
        if resumed and Decimal(str(item.quantity)) == p.quantity:
            # The earlier attempt changed it before it died: the same change is not written twice.
            return Executed({"reservation_item": _reservation_values(item), "etag": item.etag}, replayed=True)
        diff = _changed(pre.get("values", {}), _reservation_values(item), ("quantity", "unit", "finally_issued",
                                                                           "material", "plant"))
        raise PreconditionFailed(f"{what} changed since the proposal: {'; '.join(diff) or 'ETag differs'}")
    after = _sap_call(lambda: client.update_reservation_item(
        p.reservation, p.item, ReservationItemChange(quantity=p.quantity), if_match=str(pre.get("etag"))), what)
    return Executed({"reservation_item": _reservation_values(after), "etag": after.etag})


def _stock(client: Any, material: str, plant: str) -> tuple[Decimal, str | None]:
    read = _sap_call(lambda: client.material_stock(material, plant), f"stock of {material} at {plant}")
    unrestricted = [r for r in read.records if r.stock_type == "01"]
    return sum((Decimal(str(r.quantity)) for r in unrestricted), Decimal(0)), (
        unrestricted[0].unit if unrestricted else None)


def _read_requisition(cfg: dict[str, Any], p: RequisitionIn) -> Current:
    client = _sap(cfg)
    # SAP refuses a requisition in another unit than the material's base unit: say so now, not after approval.
    product = _sap_call(lambda: client.products(p.material), f"material {p.material}").records
    if not product:
        raise InvalidInput(f"SAP has no material {p.material!r}", code="unknown_record")
    base = product[0].base_unit
    if p.unit.upper() != base.upper():
        raise InvalidInput(f"{p.unit} is not the base unit of {p.material}: SAP keeps it in {base}; propose the "
                           f"quantity in {base}", code="unit_mismatch", details={"base_unit": base})
    qty, unit = _stock(client, p.material, p.plant)
    values = {"material": p.material, "plant": p.plant, "unrestricted_stock": str(qty), "stock_unit": unit}
    return Current(values, {"values": values})


def _exec_requisition(cfg: dict[str, Any], p: RequisitionIn, pre: dict[str, Any], key: str, proposer: str,
                      resumed: bool) -> Executed:
    from connectors.sap.models import PurchaseRequisitionIn, PurchaseRequisitionItemIn

    reference = key.removeprefix("eap-op-")[:40]  # carried in the PR's description: the record to look for
    if resumed:
        # OData v2 has no idempotency key for a create: an earlier attempt that died may have created it, so it
        # is never sent again blindly.
        raise PreconditionFailed(f"an earlier attempt may already have created this purchase requisition; not "
                                 f"sending it again — check SAP for a requisition described {reference!r}",
                                 code="outcome_unknown")
    client = _sap(cfg)
    pr = PurchaseRequisitionIn(description=reference, items=[PurchaseRequisitionItemIn(
        material=p.material, plant=p.plant, quantity=p.quantity, unit=p.unit, text=p.text)])
    created = _sap_call(lambda: client.create_purchase_requisition(pr), "create purchase requisition")
    return Executed({"purchase_requisition": created.purchase_requisition, "description": reference,
                     "items": [{"item": i.item, "material": i.material, "quantity": str(i.quantity), "unit": i.unit}
                               for i in created.items]})


register(OperationSpec(
    target="sap", name="update_reservation_item", title="Change the quantity of a SAP reservation item",
    min_role="operator", payload=ReservationChangeIn, risk=lambda p: "medium", read=_read_reservation,
    changes=lambda p, cur: [{"field": "quantity", "current": cur.values.get("quantity"), "new": str(p.quantity)}],
    summary=lambda p: f"Set the quantity of SAP reservation item {p.reservation}/{p.item} to {p.quantity}",
    execute=_exec_reservation, subject=lambda p: f"{p.reservation}/{p.item}"))
register(OperationSpec(
    target="sap", name="create_purchase_requisition", title="Create a SAP purchase requisition", min_role="operator",
    payload=RequisitionIn, risk=lambda p: "high" if p.quantity >= 1000 else "medium", read=_read_requisition,
    changes=lambda p, cur: [
        {"field": "purchase requisition", "current": None,
         "new": f"{p.quantity} {p.unit} of {p.material} for plant {p.plant}"},
        {"field": f"unrestricted stock of {p.material} at {p.plant}", "current": cur.values.get("unrestricted_stock"),
         "new": cur.values.get("unrestricted_stock")}],
    summary=lambda p: f"Create a SAP purchase requisition for {p.quantity} {p.unit} of {p.material} at plant "
                      f"{p.plant}", execute=_exec_requisition, subject=lambda p: p.material))


def spec_for(target: str, operation: str) -> OperationSpec:
    spec = REGISTRY.get(f"{target}.{operation}")
    if spec is None:
        raise InvalidInput(f"unknown operation {target}.{operation}; known: {', '.join(sorted(REGISTRY))}",
                           code="unknown_operation")
    return spec


def validate(spec: OperationSpec, payload: dict[str, Any]) -> BaseModel:
    try:
        return spec.payload.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"invalid payload for {spec.key}: {first['msg']} at "
                           f"{'.'.join(map(str, first['loc'])) or 'payload'}", code="invalid_payload",
                           details={"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]}
                           ) from None
