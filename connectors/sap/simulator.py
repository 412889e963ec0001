"""An SAP Gateway simulator speaking OData v2 the way SAP does, for demos and tests.

Serves the services of connectors/sap/schema.py under /sap/opu/odata/sap/<SERVICE>/ on a loopback port:
`$metadata` (EDMX), JSON with `d.results`, `$filter` (eq ne gt ge lt le, and/or/not, parentheses,
substringof/startswith/endswith), `$select`, `$orderby`, `$top`/`$skip`, `$inlinecount=allpages`,
`/$count`, server-side paging with `__next` (a `$skiptoken`), `__metadata` with ETags (entity types
with a `ConcurrencyMode="Fixed"` property), CSRF tokens (`X-CSRF-Token: Fetch` on a GET; a write
without a valid token gets 403 `X-CSRF-Token: Required`), OData error bodies, Basic auth. Writes:
purchase requisitions and reservations are created by deep insert (POST header + items); reservation
items are changed by PATCH/MERGE with `If-Match` (412 when the ETag changed, 428 without one).
JSON only (SAP would default to Atom without `Accept: application/json`; every client here asks for JSON).

Deterministic by seed (materials, stock, purchase orders, cost centres), with a simulated clock and
controls for tests: expire the CSRF tokens, fail the next requests with a status, answer with garbage,
slow down, change a record behind a client's back. Runs in a background thread:

    sim = SAPSimulator(seed=7).start()      # sim.url -> http://127.0.0.1:PORT
    sim.users                                # {"EAP_EXTRACT": "..."}: Basic auth

The parts: sim_data.py (plants, catalogue, state, seeding), sim_odata.py (error bodies, EDMX, the
$filter parser), sim_entities.py (ETags, entity JSON, keys, paged collections), sim_writes.py (deep
inserts and If-Match updates); this module is the service: test controls, auth, CSRF and dispatch.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import random
import re
import secrets
import threading
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.loopback import LoopbackHTTPService
from connectors.sap import sim_entities, sim_writes
from connectors.sap.schema import SERVICE_ROOT, SERVICES, Service
from connectors.sap.sim_data import (
    CATALOGUE,
    COST_CENTERS,
    EPOCH,
    PLANTS,
    STORAGE_LOCATIONS,
    SUPPLIERS,
    SimState,
    generate,
)
from connectors.sap.sim_odata import ODataFault, edmx, odata_error

__all__ = ["CATALOGUE", "COST_CENTERS", "DEFAULT_PASSWORD", "DEFAULT_USER", "EPOCH", "PLANTS", "STORAGE_LOCATIONS",
           "SUPPLIERS", "ODataFault", "SAPSimulator", "SimState", "digest", "edmx"]

DEFAULT_USER = "EAP_EXTRACT"
DEFAULT_PASSWORD = "sim-Extract-2026"  # noqa: S105 - the simulator's own demo credential, loopback only


class SAPSimulator(LoopbackHTTPService):
    def __init__(self, seed: int = 7, *, users: dict[str, str] | None = None, page_size: int = 100,
                 extra_materials: int = 42) -> None:
        self.seed = seed
        self.users = dict(users or {DEFAULT_USER: DEFAULT_PASSWORD})
        self.state = SimState(page_size=page_size)
        self._lock = threading.RLock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.catalogue = generate(self.state, random.Random(seed), extra_materials)  # noqa: S311 - simulation data, not security

    # ------------------------------------------------------------------ data

    def rows(self, service: str, set_name: str) -> list[dict[str, Any]]:
        return self.state.rows(service, set_name)

    etag = staticmethod(sim_entities.etag)

    # ------------------------------------------------------------------ controls

    def expire_csrf_tokens(self) -> None:
        """Invalidate every issued CSRF token (as a Gateway session timeout does)."""
        with self._lock:
            self.state.csrf.clear()

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        with self._lock:
            self.state.fail.extend([status] * count)

    def set_garbage(self, mode: str | None = "truncated") -> None:
        """"truncated" JSON, "partial" entities (keys missing, wrong types), an "html" login page, "short" pages
        (a record missing while `__count` still counts it); None: off."""
        self.state.garbage = mode

    def slow(self, seconds: float) -> None:
        self.state.delay_s = seconds

    def advance(self, minutes: float) -> None:
        with self._lock:
            self.state.now += dt.timedelta(minutes=minutes)

    def stock_of(self, material: str, plant: str | None = None, stock_type: str = "01") -> Decimal:
        """Ground truth for tests: the summed stock of a material (unrestricted by default)."""
        with self._lock:
            return sum((r["MatlWrhsStkQtyInMatlBaseUnit"] for r in self.rows("API_MATERIAL_STOCK_SRV",
                                                                              "A_MatlStkInAcctMod")
                        if r["Material"] == material and (plant is None or r["Plant"] == plant)
                        and r["InventoryStockType"] == stock_type), Decimal(0))

    def set_stock(self, material: str, plant: str, storage_location: str, quantity: Decimal | int | str) -> None:
        with self._lock:
            for r in self.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod"):
                if (r["Material"], r["Plant"], r["StorageLocation"], r["InventoryStockType"]) == \
                        (material, plant, storage_location, "01"):
                    r["MatlWrhsStkQtyInMatlBaseUnit"] = Decimal(str(quantity)).quantize(Decimal("0.001"))
                    return
            raise KeyError((material, plant, storage_location))

    def change_reservation_item(self, reservation: str, item: str, quantity: Decimal | int | str) -> None:
        """Someone else changes a reservation item in SAP (its ETag changes)."""
        with self._lock:
            row = self.state.find("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentItem",
                             {"Reservation": reservation, "ReservationItem": item})
            row["ResvnItmRequiredQtyInBaseUnit"] = Decimal(str(quantity)).quantize(Decimal("0.001"))
            row["LastChangeDateTime"] = self.state.stamp()

    def purchase_requisitions(self) -> list[dict[str, Any]]:
        with self._lock:
            heads = self.rows("API_PURCHASEREQ_PROCESS_SRV", "A_PurchaseRequisitionHeader")
            items = self.rows("API_PURCHASEREQ_PROCESS_SRV", "A_PurchaseRequisitionItem")
            return [{**h, "items": [dict(i) for i in items if i["PurchaseRequisition"] == h["PurchaseRequisition"]]}
                    for h in heads]

    def reservations(self) -> list[dict[str, Any]]:
        with self._lock:
            heads = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentHeader")
            items = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentItem")
            return [{**h, "items": [dict(i) for i in items if i["Reservation"] == h["Reservation"]]} for h in heads]

    # ------------------------------------------------------------------ HTTP

    def _auth(self, header: str | None) -> str:
        if header and header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, pw = "", ""
            if user in self.users and secrets.compare_digest(self.users[user], pw):
                return user
        raise ODataFault(401, "/IWFND/CM_CONSUMER/401", "Logon failed",
                         {"WWW-Authenticate": 'Basic realm="SAP NetWeaver Application Server [SIM/100]"'})

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes]:
        """One request → (status, headers, body). Public for the HTTP handler and direct tests."""
        hdr = {k.lower(): v for k, v in headers.items()}
        out_headers: dict[str, str] = {"dataserviceversion": "2.0"}
        try:
            with self._lock:
                self.state.requests += 1
                self.state.log.append((method, raw_path))
                if self.state.fail:
                    status = self.state.fail.pop(0)
                    raise ODataFault(status, "/IWFND/CM_BEC/026", f"Simulated failure (HTTP {status})")
            user = self._auth(hdr.get("authorization"))
            parts = urlsplit(raw_path)
            path = unquote(parts.path)
            q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            if not path.startswith(SERVICE_ROOT):
                raise ODataFault(404, "/IWFND/MED/170", f"No service found for namespace '', name '{path}'")
            svc_name, _, rest = path[len(SERVICE_ROOT):].partition("/")
            svc = SERVICES.get(svc_name)
            if svc is None:
                raise ODataFault(404, "/IWFND/MED/170", f"No service found for name '{svc_name}', version '0001'")
            base = f"http://{hdr.get('host', '127.0.0.1')}"
            with self._lock:
                if method == "GET" and hdr.get("x-csrf-token", "").lower() == "fetch":
                    token = secrets.token_urlsafe(18)
                    self.state.csrf[token] = user
                    out_headers["x-csrf-token"] = token
                if method != "GET":
                    token = hdr.get("x-csrf-token", "")
                    if self.state.csrf.get(token) != user:
                        return 403, {"x-csrf-token": "Required", "content-type": "text/plain"}, \
                            b"CSRF token validation failed"
                status, payload, extra = self._dispatch(method, svc, rest, q, base, hdr, body, user)
            out_headers.update(extra)
        except ODataFault as f:
            out_headers.update({k.lower(): v for k, v in f.headers.items()})
            status, payload = f.status, odata_error(f.code, f.message)
        if self.state.delay_s:
            time.sleep(self.state.delay_s)
        if isinstance(payload, str):
            ctype = "application/xml" if payload.startswith("<?xml") else "text/plain"
            data = payload.encode()
        elif payload is None:
            ctype, data = "", b""
        else:
            ctype, data = "application/json; charset=utf-8", json.dumps(payload).encode()
            if self.state.garbage and status == 200 and "d" in payload:
                data = self._garbage(payload)
                if self.state.garbage == "html":
                    ctype = "text/html"
        if ctype:
            out_headers["content-type"] = ctype
        return status, out_headers, data

    def _garbage(self, payload: dict[str, Any]) -> bytes:
        mode = self.state.garbage
        if mode == "html":
            return b"<html><body><form action='/sap/bc/ui5_ui5/logon'>Logon</form></body></html>"
        if mode == "short":
            d = payload["d"]
            if isinstance(d, dict) and d.get("results"):
                d["results"] = d["results"][:-1]
            return json.dumps(payload).encode()
        if mode == "partial":
            d = payload["d"]
            rows = d.get("results", [d]) if isinstance(d, dict) else []
            for r in rows:
                for k in list(r)[1:3]:
                    r.pop(k, None)  # required keys missing
                for k, v in list(r.items()):
                    if isinstance(v, str) and re.fullmatch(r"-?\d+\.\d+", v):
                        r[k] = "n/a"  # a decimal that is not one
            return json.dumps(payload).encode()
        return json.dumps(payload).encode()[: 80]

    def _dispatch(self, method: str, svc: Service, rest: str, q: dict[str, str], base: str, hdr: dict[str, str],
                  body: bytes, user: str) -> tuple[int, Any, dict[str, str]]:
        if rest in ("", "/"):
            if method != "GET":
                raise ODataFault(405, "/IWFND/CM_MGW/004", "Method not allowed")
            return 200, {"d": {"EntitySets": [t.set_name for t in svc.types]}}, {}
        if rest == "$metadata":
            return 200, edmx(svc), {}
        segment, _, tail = rest.partition("/")
        m = re.fullmatch(r"(\w+)(?:\((.*)\))?", segment)
        if not m:
            raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{segment}'")
        try:
            etype = svc.by_set(m.group(1))
        except KeyError:
            raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{m.group(1)}'") from None
        path = f"{SERVICE_ROOT}{svc.name}/{etype.set_name}"
        if m.group(2) is None:
            if method == "GET":
                if tail not in ("", "$count"):
                    raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{tail}'")
                status, payload = sim_entities.collection(self.rows(svc.name, etype.set_name), self.state.page_size,
                                                          svc, etype, q, base, path, tail == "$count")
                return status, payload, {}
            if method == "POST":
                return sim_writes.post(self.state, svc, etype, body, base, user)
            raise ODataFault(405, "/IWFND/CM_MGW/004", f"Method {method} not allowed for an entity set")
        key = sim_entities.parse_key(etype, m.group(2))
        row = self.state.find(svc.name, etype.set_name, key)
        if method == "GET":
            if tail:
                raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{tail}'")
            tag = self.etag(etype, row)
            return 200, {"d": sim_entities.entity_json(svc, etype, row, base)}, ({"etag": tag} if tag else {})
        if method in ("PATCH", "MERGE", "PUT"):
            return 204, None, sim_writes.update(self.state, etype, row, hdr.get("if-match"), body)
        raise ODataFault(405, "/IWFND/CM_MGW/004", f"Method {method} not allowed")

    def start(self) -> SAPSimulator:
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Keep-alive with headers and body in separate writes: without TCP_NODELAY, Nagle and delayed ACKs
            # add ~40 ms to every response on loopback.
            disable_nagle_algorithm = True

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = sim.handle(self.command, self.path, dict(self.headers.items()), body)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PATCH = do_PUT = do_MERGE = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler, "sap-sim")
        return self


def digest(rows: list[dict[str, Any]]) -> str:
    """A stable fingerprint of simulator rows (tests compare determinism by seed)."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
