"""SAP OData v2 client built on SAP's `pyodata`: typed, validated, with timeouts, retries and CSRF.

    client = SAPClient(SAPConfig(base_url="https://gw.example:44300", username="EAP_EXTRACT", password="…"))
    stock = client.material_stock(material="SP-4001")          # SAPRead[MaterialStock], every page
    pr = client.create_purchase_requisition(PurchaseRequisitionIn(items=[...]))
    item = client.reservation_item("0000000001", "0001")        # carries its ETag
    client.update_reservation_item("0000000001", "0001", ReservationItemChange(quantity=5), if_match=item.etag)

pyodata parses each service's `$metadata` (fetched once per client) and builds the requests; a
`requests` session (connectors/sap/session.py) carries Basic auth, the SAP session cookie, a timeout on
every request and the `sap-client`. Every response is validated into the pydantic models of connectors/sap/models.py:
garbage, an HTML logon page, a partial page (fewer records than `__count`) or a record with a missing or
mistyped property is an error (SAPBadResponse), never data.

Reads are retried with exponential backoff on timeouts, connection errors and 5xx. Writes are never
retried blindly: a write that timed out or got a 5xx has an unknown outcome and fails with
`sap_write_unknown` (the write workflow decides, with its idempotency key). The only automatic retry of a
write is after SAP rejected its CSRF token (403 `X-CSRF-Token: Required`, nothing was written): the
token is fetched again (`X-CSRF-Token: Fetch`) and the write sent once more. A changed record (ETag
mismatch, 412) is SAPPreconditionFailed. The errors are in connectors/sap/errors.py (importable from here).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pyodata
import requests
from pydantic import ValidationError
from pyodata.exceptions import HttpError, PyODataException

from connectors.sap.errors import (
    SAPAuthFailed,
    SAPBadResponse,
    SAPError,
    SAPNotFound,
    SAPPreconditionFailed,
    SAPRejected,
)
from connectors.sap.models import (
    CostCenter,
    MaterialStock,
    Product,
    ProductPlant,
    PurchaseOrder,
    PurchaseOrderItem,
    PurchaseRequisition,
    PurchaseRequisitionIn,
    Reservation,
    ReservationIn,
    ReservationItem,
    ReservationItemChange,
    SAPRead,
    SAPRecord,
)
from connectors.sap.schema import SERVICE_ROOT
from connectors.sap.session import SAPConfig, SAPSession, odata_error_message

__all__ = ["SAPAuthFailed", "SAPBadResponse", "SAPClient", "SAPConfig", "SAPError", "SAPNotFound",
           "SAPPreconditionFailed", "SAPRejected", "odata_error_message"]

R = TypeVar("R", bound=SAPRecord)
X = TypeVar("X")


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{first['type']} at {'.'.join(map(str, first['loc']))}"


def _values(proxy: Any) -> dict[str, Any]:
    """The typed property values pyodata converted from the JSON (its per-entity cache)."""
    cache = getattr(proxy, "_cache", None)
    if not isinstance(cache, dict):
        raise SAPBadResponse("SAP returned an entity pyodata could not read", code="sap_bad_response")
    return dict(cache)


def _sap_decimal(value: Decimal) -> str:
    return format(value, "f")


def _sap_datetime(value: dt.date) -> dt.datetime:
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


class SAPClient:
    """One SAP system (one tenant's connection). Thread-compatible, not thread-safe: one per worker."""

    def __init__(self, config: SAPConfig) -> None:
        self.config = config
        self.session = SAPSession(config.timeout_s, config.sap_client)
        self.session.auth = (config.username, config.password)
        self.session.headers.update({"Accept": "application/json"})
        self._services: dict[str, Any] = {}
        self._csrf: dict[str, str] = {}

    def service_url(self, service: str) -> str:
        return f"{self.config.base_url}{SERVICE_ROOT}{service}/"

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], X], *, retry: bool = True) -> X:
        last = ""
        attempts = self.config.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                return fn()
            except requests.Timeout:
                last = f"timed out after {self.config.timeout_s:g}s"
            except requests.ConnectionError as exc:
                last = f"connection failed ({type(exc).__name__})"
            except HttpError as exc:
                status = exc.response.status_code
                if status == 401:
                    raise SAPAuthFailed(f"SAP {what}: logon failed (HTTP 401)") from None
                if status == 404:
                    raise SAPNotFound(f"SAP {what}: {odata_error_message(exc.response)}") from None
                if status == 412:
                    raise SAPPreconditionFailed(f"SAP {what}: {odata_error_message(exc.response)}") from None
                if status < 500:
                    csrf = str(exc.response.headers.get("x-csrf-token", "")).lower() == "required"
                    raise SAPRejected(f"SAP {what}: HTTP {status}: {odata_error_message(exc.response)}",
                                      details={"status": status, "csrf_required": csrf}) from None
                last = f"HTTP {status}: {odata_error_message(exc.response)}"
            except (ValueError, KeyError, TypeError, AttributeError, PyODataException) as exc:
                # JSON that does not parse, no "d", an unexpected shape, a value pyodata cannot convert.
                raise SAPBadResponse(f"SAP {what}: invalid response ({type(exc).__name__}: {str(exc)[:120]})"
                                     ) from None
            if not retry:
                raise SAPError(f"SAP {what}: {last}; the outcome is unknown and the write was not retried",
                               code="sap_write_unknown")
            if attempt < attempts - 1:
                time.sleep(self.config.backoff_s * (2 ** attempt))
        raise SAPError(f"SAP {what}: {last} (after {attempts} attempts)")

    def _service(self, name: str) -> Any:
        svc = self._services.get(name)
        if svc is None:
            def load() -> Any:
                resp = self.session.get(self.service_url(name) + "$metadata")
                if resp.status_code != 200:
                    raise HttpError(f"$metadata of {name}: HTTP {resp.status_code}", resp)
                if b"<edmx:Edmx" not in resp.content[:2000]:
                    raise ValueError("the $metadata document is not EDMX")
                return pyodata.Client(self.service_url(name), self.session, metadata=resp.content)

            svc = self._call(f"{name}/$metadata", load)
            self._services[name] = svc
        return svc

    def _validate(self, model: type[R], proxies: list[Any], what: str) -> list[R]:
        out = []
        for i, p in enumerate(proxies):
            try:
                values = _values(p)
                if "etag" in model.model_fields:
                    values["etag"] = getattr(p, "etag", None)
                out.append(model.model_validate(values))
            except ValidationError as exc:
                raise SAPBadResponse(f"SAP {what}: invalid record {i} ({_first_error(exc)})") from None
        return out

    def read(self, service: str, entity_set: str, model: type[R], *, filter: str | None = None,
             top: int | None = None, orderby: str | None = None) -> SAPRead[R]:
        """Every page of an entity set (following `__next`), validated into `model`."""
        svc = self._service(service)
        es = getattr(svc.entity_sets, entity_set)
        what = f"{service}/{entity_set}"
        as_of = dt.datetime.now(dt.UTC)

        def first() -> Any:
            req = es.get_entities().select(",".join(model.sap_fields())).count(inline=True)
            if filter:
                req = req.filter(filter)
            if top is not None:
                req = req.top(top)
            if orderby:
                req = req.custom("$orderby", orderby)
            return req.execute()

        page = self._call(what, first)
        if not isinstance(page, list):
            raise SAPBadResponse(f"SAP {what}: invalid response (not an entity collection)")
        total = getattr(page, "total_count", None)
        records = self._validate(model, list(page), what)
        pages = 1
        nxt = getattr(page, "next_url", None)
        while nxt:
            pages += 1
            if pages > self.config.max_pages:
                raise SAPBadResponse(f"SAP {what}: more than {self.config.max_pages} pages")
            page = self._call(what, functools.partial(self._next_page, es, nxt))
            records += self._validate(model, list(page), what)
            nxt = getattr(page, "next_url", None)
        expected = total if top is None or total is None else min(total, top)
        if expected is not None and len(records) != expected:
            raise SAPBadResponse(f"SAP {what}: partial response ({len(records)} of {expected} records)")
        return SAPRead[model](service=service, entity_set=entity_set,  # type: ignore[valid-type]
                              url=self.service_url(service) + entity_set, as_of=as_of, records=records,
                              total=total, pages=pages)

    @staticmethod
    def _next_page(entity_set: Any, url: str) -> Any:
        """The page at a server's `__next` link (pyodata refuses a link to another origin)."""
        return entity_set.get_entities().next_url(url).execute()

    @staticmethod
    def literal(value: str) -> str:
        """An Edm.String literal for $filter (quotes doubled: no filter injection)."""
        return "'" + value.replace("'", "''") + "'"

    # ------------------------------------------------------------------ reads

    def material_stock(self, material: str | None = None, plant: str | None = None) -> SAPRead[MaterialStock]:
        """Stock per material, plant, storage location, batch and stock type (API_MATERIAL_STOCK_SRV)."""
        parts = [f"Material eq {self.literal(material)}" if material else None,
                 f"Plant eq {self.literal(plant)}" if plant else None]
        flt = " and ".join(p for p in parts if p) or None
        return self.read("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod", MaterialStock, filter=flt)

    def products(self, product: str | None = None) -> SAPRead[Product]:
        return self.read("API_PRODUCT_SRV", "A_Product", Product,
                         filter=f"Product eq {self.literal(product)}" if product else None)

    def product_plants(self, product: str | None = None) -> SAPRead[ProductPlant]:
        return self.read("API_PRODUCT_SRV", "A_ProductPlant", ProductPlant,
                         filter=f"Product eq {self.literal(product)}" if product else None)

    def purchase_orders(self) -> SAPRead[PurchaseOrder]:
        return self.read("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder", PurchaseOrder)

    def purchase_order_items(self, *, open_only: bool = False, material: str | None = None
                             ) -> SAPRead[PurchaseOrderItem]:
        parts = ["IsCompletelyDelivered eq false" if open_only else None,
                 f"Material eq {self.literal(material)}" if material else None]
        return self.read("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrderItem", PurchaseOrderItem,
                         filter=" and ".join(p for p in parts if p) or None)

    def cost_centers(self) -> SAPRead[CostCenter]:
        return self.read("API_COSTCENTER_SRV", "A_CostCenter", CostCenter)

    def reservation_item(self, reservation: str, item: str) -> ReservationItem:
        """One reservation item with its ETag (the precondition of a later change)."""
        svc = self._service("API_RESERVATION_DOCUMENT_SRV")
        what = f"A_ReservationDocumentItem({reservation}/{item})"
        proxy = self._call(what, lambda: svc.entity_sets.A_ReservationDocumentItem.get_entity(
            Reservation=reservation, ReservationItem=item).execute())
        return self._validate(ReservationItem, [proxy], what)[0]

    # ------------------------------------------------------------------ writes

    def csrf_token(self, service: str, *, refresh: bool = False) -> str:
        """The session's CSRF token for a service (`X-CSRF-Token: Fetch` on a GET of the service root)."""
        if refresh or service not in self._csrf:
            def fetch() -> str:
                resp = self.session.get(self.service_url(service), headers={"X-CSRF-Token": "Fetch"})
                if resp.status_code != 200:
                    raise HttpError(f"CSRF fetch: HTTP {resp.status_code}", resp)
                token = resp.headers.get("x-csrf-token", "")
                if not token or token.lower() == "required":
                    raise ValueError("SAP sent no CSRF token")
                return token

            self._csrf[service] = self._call(f"{service} CSRF token", fetch)
        return self._csrf[service]

    def _write(self, service: str, what: str, build: Callable[[], Any], headers: dict[str, str] | None = None
               ) -> Any:
        """Send a write with the CSRF token; once more with a fresh token if SAP rejected it (nothing was
        written then). Any other failure is not retried."""
        for attempt in range(2):
            req = build()
            req.add_headers({"X-CSRF-Token": self.csrf_token(service, refresh=attempt > 0), **(headers or {})})
            try:
                return self._call(what, req.execute, retry=False)
            except SAPRejected as exc:
                # 403 with "X-CSRF-Token: Required": the token, not the write, was refused.
                if exc.details.get("csrf_required"):
                    if attempt == 0:
                        continue
                    raise SAPRejected(f"SAP {what}: the CSRF token was refused twice",
                                      code="sap_csrf_failed", details=exc.details) from None
                raise
        raise AssertionError("unreachable")

    def create_purchase_requisition(self, pr: PurchaseRequisitionIn) -> PurchaseRequisition:
        """Create a purchase requisition with its items (deep insert into A_PurchaseRequisitionHeader)."""
        service = "API_PURCHASEREQ_PROCESS_SRV"
        svc = self._service(service)
        items = [{k: v for k, v in {
            "Material": i.material, "Plant": i.plant, "RequestedQuantity": _sap_decimal(i.quantity),
            "BaseUnit": i.unit, "PurchaseRequisitionItemText": i.text, "PurchasingGroup": i.purchasing_group,
            "DeliveryDate": _sap_datetime(i.delivery_date) if i.delivery_date else None}.items() if v is not None}
            for i in pr.items]
        headers = svc.entity_sets.A_PurchaseRequisitionHeader
        created = self._write(service, "create purchase requisition", lambda: headers.create_entity().set(
            PurchaseRequisitionType=pr.pr_type, PurReqnDescription=pr.description, to_PurchaseReqnItem=items))
        return self._created(created, PurchaseRequisition, "to_PurchaseReqnItem", "create purchase requisition")

    def create_reservation(self, r: ReservationIn) -> Reservation:
        """Create a reservation with its items (deep insert into A_ReservationDocumentHeader)."""
        service = "API_RESERVATION_DOCUMENT_SRV"
        svc = self._service(service)
        items = [{k: v for k, v in {
            "Product": i.material, "Plant": i.plant, "StorageLocation": i.storage_location,
            "ResvnItmRequiredQtyInBaseUnit": _sap_decimal(i.quantity), "BaseUnit": i.unit,
            "MatlCompRequirementDate": _sap_datetime(i.requirement_date) if i.requirement_date else None,
        }.items() if v is not None} for i in r.items]
        head = {k: v for k, v in {"GoodsMovementType": r.movement_type, "CostCenter": r.cost_center,
                                  "GoodsRecipientName": r.recipient, "IssuingOrReceivingPlant": r.plant}.items()
                if v is not None}
        reservations = svc.entity_sets.A_ReservationDocumentHeader
        created = self._write(service, "create reservation", lambda: reservations.create_entity().set(
            **head, to_ReservationDocumentItem=items))
        return self._created(created, Reservation, "to_ReservationDocumentItem", "create reservation")

    def update_reservation_item(self, reservation: str, item: str, change: ReservationItemChange, *,
                                if_match: str) -> ReservationItem:
        """Change a reservation item only if it still has the ETag `if_match` (else SAPPreconditionFailed);
        returns the item as SAP has it afterwards (with its new ETag)."""
        if not if_match:
            raise SAPRejected("an ETag (If-Match) is required to change a reservation item", code="sap_etag_required")
        service = "API_RESERVATION_DOCUMENT_SRV"
        svc = self._service(service)
        values: dict[str, Any] = {}
        if change.quantity is not None:
            values["ResvnItmRequiredQtyInBaseUnit"] = _sap_decimal(change.quantity)
        if change.requirement_date is not None:
            values["MatlCompRequirementDate"] = _sap_datetime(change.requirement_date)
        if not values:
            raise SAPRejected("nothing to change", code="sap_empty_change")

        def build() -> Any:
            req = svc.entity_sets.A_ReservationDocumentItem.update_entity(
                Reservation=reservation, ReservationItem=item)
            return req.set(**values)

        self._write(service, f"update reservation item {reservation}/{item}", build, {"If-Match": if_match})
        return self.reservation_item(reservation, item)

    def _created(self, proxy: Any, model: type[R], nav: str, what: str) -> R:
        values = _values(proxy)
        raw_items = values.pop(nav, None)
        if isinstance(raw_items, dict):
            raw_items = raw_items.get("results")
        if not isinstance(raw_items, list) or not raw_items:
            raise SAPBadResponse(f"SAP {what}: the created document has no items in the response")
        item_model = model.model_fields["items"].annotation.__args__[0]  # type: ignore[union-attr]
        items = []
        for i, raw in enumerate(raw_items):
            item_values = _values(raw) if not isinstance(raw, dict) else raw
            try:
                items.append(item_model.model_validate(self._from_json(item_values)))
            except ValidationError as exc:
                raise SAPBadResponse(f"SAP {what}: invalid item {i} ({_first_error(exc)})") from None
        try:
            return model.model_validate({**values, "items": items})
        except ValidationError as exc:
            raise SAPBadResponse(f"SAP {what}: invalid response ({_first_error(exc)})") from None

    @staticmethod
    def _from_json(values: dict[str, Any]) -> dict[str, Any]:
        """Nested items of a deep-insert response arrive as raw JSON: /Date(ms)/ → datetime."""
        out = {}
        for k, v in values.items():
            if isinstance(v, str) and v.startswith("/Date(") and v.endswith(")/"):
                try:
                    v = dt.datetime.fromtimestamp(int(v[6:-2].split("+")[0]) / 1000, dt.UTC)
                except ValueError:
                    raise SAPBadResponse(f"malformed Edm.DateTime {v[:40]!r}") from None
            out[k] = v
        return out
