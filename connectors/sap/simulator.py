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
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import http.server
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import quoteattr

from connectors.loopback import LoopbackHTTPService
from connectors.sap.schema import SERVICE_ROOT, SERVICES, EntityType, Service

EPOCH = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)
DEFAULT_USER = "EAP_EXTRACT"
DEFAULT_PASSWORD = "sim-Extract-2026"  # noqa: S105 - the simulator's own demo credential, loopback only
PLANTS = {"1010": "Stuttgart press shop", "1020": "Brno body & assembly"}
STORAGE_LOCATIONS = {"0001": "Raw material", "0002": "Production supply", "0003": "Finished goods",
                     "0004": "MRO spare parts"}
SUPPLIERS = [("100010", "Nordstahl Flachprodukte GmbH"), ("100020", "Hydrotec Fluids AG"),
             ("100030", "Schraubenwerk Kern KG"), ("100040", "Weldline Consumables s.r.o."),
             ("100050", "Pressenservice Maier GmbH"), ("100060", "Coatex Lacke GmbH")]
# (part number, product type, description, base unit, product group, supplier index, unit price EUR)
CATALOGUE: list[tuple[str, str, str, str, str, int, str]] = [
    ("RM-1001", "ROH", "Steel coil DC04 1.2 mm", "KG", "STEEL", 0, "0.92"),
    ("RM-1002", "ROH", "Steel sheet S355MC 3.0 mm", "KG", "STEEL", 0, "1.05"),
    ("RM-1003", "ROH", "Aluminium sheet EN AW-5754 2.0 mm", "KG", "ALU", 0, "3.40"),
    ("RM-1010", "ROH", "Welding wire G3Si1 1.0 mm", "KG", "WELD", 3, "2.15"),
    ("RM-1020", "ROH", "Hex bolt M10x40 8.8 zinc flake", "PC", "FAST", 2, "0.11"),
    ("RM-1021", "ROH", "Hex nut M10 class 8 zinc flake", "PC", "FAST", 2, "0.04"),
    ("SF-2200", "HALB", "Bracket BR-220 stamped blank", "PC", "SEMI", 0, "1.80"),
    ("FG-3220", "FERT", "Bracket BR-220 welded, e-coated", "PC", "FIN", 0, "6.90"),
    ("FG-3221", "FERT", "Bracket BR-221 welded, e-coated", "PC", "FIN", 0, "7.20"),
    ("FG-3300", "FERT", "Cross member CM-300", "PC", "FIN", 0, "24.50"),
    ("SP-4001", "ERSA", "Return filter element 10 um", "PC", "SPARE", 4, "86.00"),
    ("SP-4002", "ERSA", "Seal kit press cylinder D160", "PC", "SPARE", 4, "412.00"),
    ("SP-4003", "ERSA", "Ram guide bearing bush", "PC", "SPARE", 4, "238.00"),
    ("SP-4004", "ERSA", "Proportional valve 4WRPE 10", "PC", "SPARE", 4, "1890.00"),
    ("OS-5001", "HIBE", "Hydraulic oil HLP 46", "L", "OIL", 1, "3.80"),
    ("OS-5002", "HIBE", "Grease cartridge EP2 400 g", "PC", "OIL", 1, "7.40"),
    ("OS-5003", "HIBE", "Welding contact tip M6 1.0 mm", "PC", "WELD", 3, "0.85"),
    ("OS-5004", "HIBE", "Cathodic e-coat primer EC-7", "L", "PAINT", 5, "11.20"),
]
COST_CENTERS = [("4110", "Press shop", "Stamping presses P1-P4"), ("4120", "Body welding", "Robot welding cells"),
                ("4130", "Paint shop", "E-coat and top coat"), ("4140", "Assembly", "Final assembly lines"),
                ("4210", "Maintenance", "Plant maintenance"), ("4310", "Quality", "Quality assurance and lab"),
                ("4410", "Logistics", "Warehouse and internal logistics"), ("4510", "Tooling", "Die shop"),
                ("9100", "Plant admin", "Plant management and admin")]


def _ms(value: dt.datetime) -> str:
    return f"/Date({int(value.timestamp() * 1000)})/"


def _odata_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": {"lang": "en", "value": message},
                      "innererror": {"transactionid": secrets.token_hex(16).upper(), "errordetails": []}}}


class ODataFault(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ---------------------------------------------------------------------------------------------- EDMX


def edmx(service: Service) -> str:
    ns = service.name
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
           'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
           'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
           '<edmx:DataServices m:DataServiceVersion="2.0">',
           f'<Schema Namespace="{ns}" xml:lang="en" sap:schema-version="1" '
           'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">']
    assocs: list[tuple[str, EntityType, EntityType, tuple[str, ...]]] = []
    for t in service.types:
        out.append(f'<EntityType Name="{t.name}" sap:content-version="1"><Key>'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in t.keys) + "</Key>")
        for p in t.props:
            attrs = [f'Name="{p.name}"', f'Type="{p.type}"']
            if not p.nullable or p.name in t.keys:
                attrs.append('Nullable="false"')
            if p.max_length:
                attrs.append(f'MaxLength="{p.max_length}"')
            if p.precision is not None:
                attrs.append(f'Precision="{p.precision}"')
            if p.scale is not None:
                attrs.append(f'Scale="{p.scale}"')
            if p.concurrency:
                attrs.append('ConcurrencyMode="Fixed"')
            if p.name not in t.updatable:
                attrs.append('sap:updatable="false"')
            out.append(f"<Property {' '.join(attrs)}/>")
        for n in t.navs:
            target = service.by_type(n.target)
            name = f"assoc_{t.name}_{n.name}"
            assocs.append((name, t, target, n.fk))
            out.append(f'<NavigationProperty Name="{n.name}" Relationship="{ns}.{name}" '
                       f'FromRole="FromRole_{name}" ToRole="ToRole_{name}"/>')
        out.append("</EntityType>")
    for name, src, dst, fk in assocs:
        out.append(f'<Association Name="{name}" sap:content-version="1">'
                   f'<End Type="{ns}.{src.name}" Multiplicity="1" Role="FromRole_{name}"/>'
                   f'<End Type="{ns}.{dst.name}" Multiplicity="*" Role="ToRole_{name}"/>'
                   f'<ReferentialConstraint><Principal Role="FromRole_{name}">'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in fk)
                   + f'</Principal><Dependent Role="ToRole_{name}">'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in fk)
                   + "</Dependent></ReferentialConstraint></Association>")
    out.append(f'<EntityContainer Name="{ns}_Entities" m:IsDefaultEntityContainer="true" '
               'sap:supported-formats="atom json xlsx">')
    for t in service.types:
        out.append(f'<EntitySet Name="{t.set_name}" EntityType="{ns}.{t.name}" '
                   f'sap:creatable={quoteattr(str(t.creatable).lower())} '
                   f'sap:updatable={quoteattr(str(bool(t.updatable)).lower())} sap:deletable="false" '
                   'sap:content-version="1"/>')
    for name, src, dst, _fk in assocs:
        out.append(f'<AssociationSet Name="{name}" Association="{ns}.{name}" sap:creatable="false" '
                   f'sap:updatable="false" sap:deletable="false" sap:content-version="1">'
                   f'<End EntitySet="{src.set_name}" Role="FromRole_{name}"/>'
                   f'<End EntitySet="{dst.set_name}" Role="ToRole_{name}"/></AssociationSet>')
    out += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- $filter

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')|(?P<num>-?\d+(?:\.\d+)?[mMdDlLfF]?)"
                    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>[(),]))")
_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"substringof", "startswith", "endswith", "tolower", "toupper"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ODataFault(400, "SY/530", f"Invalid token at position {pos} in $filter")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


Pred = Callable[[dict[str, Any]], Any]


def _either(a: Pred, b: Pred) -> Pred:
    return lambda r: bool(a(r)) or bool(b(r))


def _both(a: Pred, b: Pred) -> Pred:
    return lambda r: bool(a(r)) and bool(b(r))


class _Filter:
    """A recursive-descent parser of the $filter subset SAP clients send; builds a predicate."""

    def __init__(self, text: str, etype: EntityType) -> None:
        self.toks, self.i, self.etype = _tokens(text), 0, etype

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ODataFault(400, "SY/530", f"Invalid $filter: expected {value or 'a term'}")
        self.i += 1
        return tok

    def parse(self) -> Callable[[dict[str, Any]], Any]:
        fn = self._or()
        if self._peek() is not None:
            raise ODataFault(400, "SY/530", f"Invalid $filter: unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return fn

    def _or(self) -> Callable[[dict[str, Any]], Any]:
        left = self._and()
        while (tok := self._peek()) and tok[1] == "or":
            self.i += 1
            left = _either(left, self._and())
        return left

    def _and(self) -> Callable[[dict[str, Any]], Any]:
        left = self._not()
        while (tok := self._peek()) and tok[1] == "and":
            self.i += 1
            left = _both(left, self._not())
        return left

    def _not(self) -> Callable[[dict[str, Any]], Any]:
        if (tok := self._peek()) and tok[1] == "not":
            self.i += 1
            inner = self._not()
            return lambda r: not inner(r)
        return self._cmp()

    def _cmp(self) -> Callable[[dict[str, Any]], Any]:
        left = self._primary()
        tok = self._peek()
        if tok and tok[0] == "id" and tok[1] in _CMP:
            self.i += 1
            op, right = tok[1], self._primary()

            def compare(r: dict[str, Any]) -> bool:
                a, b = left(r), right(r)
                if op == "eq":
                    return bool(a == b)
                if op == "ne":
                    return bool(a != b)
                if a is None or b is None:
                    return False
                try:
                    return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])
                except TypeError:
                    raise ODataFault(400, "SY/530", f"Invalid $filter: cannot compare with {op}") from None
            return compare
        return left

    def _primary(self) -> Callable[[dict[str, Any]], Any]:
        kind, value = self._take()
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "str":
            s = value[1:-1].replace("''", "'")
            return lambda r: s
        if kind == "dt":
            raw = value[len("datetime'"):-1]
            try:
                when = dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
            except ValueError:
                raise ODataFault(400, "SY/530", f"Invalid datetime literal {raw!r}") from None
            return lambda r: when
        if kind == "num":
            num = Decimal(value.rstrip("mMdDlLfF"))
            return lambda r: num
        if kind == "id":
            if value in ("true", "false"):
                b = value == "true"
                return lambda r: b
            if value == "null":
                return lambda r: None
            if value in _FUNCS:
                self._take("(")
                args = [self._or()]
                while (tok := self._peek()) and tok[1] == ",":
                    self.i += 1
                    args.append(self._or())
                self._take(")")
                return self._func(value, args)
            if value not in self.etype.names:
                raise ODataFault(400, "SY/530", f"Property {value} not found in type {self.etype.name}")
            return lambda r: r.get(value)
        raise ODataFault(400, "SY/530", f"Invalid $filter: unexpected {value!r}")

    @staticmethod
    def _func(name: str, args: list[Callable[[dict[str, Any]], Any]]) -> Callable[[dict[str, Any]], Any]:
        want = 1 if name in ("tolower", "toupper") else 2
        if len(args) != want:
            raise ODataFault(400, "SY/530", f"Invalid $filter: {name} takes {want} arguments")
        if name == "tolower":
            return lambda r: str(args[0](r) or "").lower()
        if name == "toupper":
            return lambda r: str(args[0](r) or "").upper()
        if name == "substringof":
            return lambda r: str(args[0](r)) in str(args[1](r) or "")
        if name == "startswith":
            return lambda r: str(args[0](r) or "").startswith(str(args[1](r)))
        return lambda r: str(args[0](r) or "").endswith(str(args[1](r)))


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda r: (r.get(name) is None, r.get(name))


# ---------------------------------------------------------------------------------------------- state


@dataclass
class SimState:
    now: dt.datetime = EPOCH
    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "SERVICE/Set" -> rows
    csrf: dict[str, str] = field(default_factory=dict)  # token -> user
    page_size: int = 100
    delay_s: float = 0.0
    garbage: str | None = None  # "truncated" | "partial" | "html"
    fail: list[int] = field(default_factory=list)  # statuses for the next requests
    requests: int = 0
    log: list[tuple[str, str]] = field(default_factory=list)
    seq: int = 0


class SAPSimulator(LoopbackHTTPService):
    def __init__(self, seed: int = 7, *, users: dict[str, str] | None = None, page_size: int = 100,
                 extra_materials: int = 42) -> None:
        self.seed = seed
        self.users = dict(users or {DEFAULT_USER: DEFAULT_PASSWORD})
        self.state = SimState(page_size=page_size)
        self._lock = threading.RLock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._generate(random.Random(seed), extra_materials)  # noqa: S311 - simulation data, not security

    # ------------------------------------------------------------------ data

    def rows(self, service: str, set_name: str) -> list[dict[str, Any]]:
        return self.state.data.setdefault(f"{service}/{set_name}", [])

    def _stamp(self) -> dt.datetime:
        """A strictly increasing change time (the ETag source)."""
        self.state.seq += 1
        return self.state.now + dt.timedelta(microseconds=self.state.seq)

    def _generate(self, rng: random.Random, extra: int) -> None:
        catalogue = list(CATALOGUE)
        sizes = [(d, ln) for d in (6, 8, 10, 12, 16) for ln in (16, 20, 25, 30, 40, 50, 60, 80)]
        for i, (d, ln) in enumerate(sizes[:extra]):
            catalogue.append((f"RM-{1100 + i}", "ROH", f"Hex bolt M{d}x{ln} 8.8 zinc flake", "PC", "FAST", 2,
                              f"{0.03 + d * ln / 6000:.2f}"))
        self.catalogue = catalogue
        products, plant_data, stock = (self.rows("API_PRODUCT_SRV", "A_Product"),
                                       self.rows("API_PRODUCT_SRV", "A_ProductPlant"),
                                       self.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod"))
        for part, ptype, desc, unit, group, _sup, _price in catalogue:
            weight = Decimal(str(round(rng.uniform(0.01, 25.0), 3))) if unit != "L" else Decimal("0.870")
            products.append({"Product": part, "ProductType": ptype, "ProductGroup": group, "BaseUnit": unit,
                             "ProductDescription": desc, "GrossWeight": weight, "WeightUnit": "KG",
                             "IndustryStandardName": "", "IsMarkedForDeletion": False,
                             "LastChangeDate": EPOCH - dt.timedelta(days=rng.randint(3, 400))})
            scale = {"KG": 4000, "L": 600, "PC": 300}[unit] if ptype not in ("ERSA",) else 8
            for plant in PLANTS:
                reorder = Decimal(max(2, int(scale * rng.uniform(0.2, 0.5))))
                plant_data.append({"Product": part, "Plant": plant, "PurchasingGroup": "P01" if plant == "1010"
                                   else "P02", "MRPType": "VB", "ReorderThresholdQuantity": reorder,
                                   "SafetyStockQuantity": (reorder / 2).quantize(Decimal("1")), "BaseUnit": unit})
                slocs = {"ROH": ["0001", "0002"], "HALB": ["0002"], "FERT": ["0003"], "ERSA": ["0004"],
                         "HIBE": ["0004", "0002"]}[ptype]
                for n, sloc in enumerate(slocs):
                    # About one material-plant in six runs below its reorder point (inventory_below_min).
                    low = n == 0 and rng.random() < 0.17
                    qty = reorder * Decimal(str(round(rng.uniform(0.1, 0.8), 2))) if low else \
                        Decimal(int(scale * rng.uniform(0.6, 3.0)))
                    if n > 0:
                        qty = Decimal(int(scale * rng.uniform(0.05, 0.3)))
                    batch = f"C{26}{rng.randint(1, 52):02d}-{rng.randint(100, 999)}" if group == "STEEL" else ""
                    stock.append({"Material": part, "Plant": plant, "StorageLocation": sloc, "Batch": batch,
                                  "InventoryStockType": "01", "MatlWrhsStkQtyInMatlBaseUnit": qty.quantize(
                                      Decimal("0.001")), "MaterialBaseUnit": unit})
                    if ptype == "FERT" and rng.random() < 0.4:
                        stock.append({"Material": part, "Plant": plant, "StorageLocation": sloc, "Batch": batch,
                                      "InventoryStockType": "02", "MatlWrhsStkQtyInMatlBaseUnit": Decimal(
                                          rng.randint(20, 200)).quantize(Decimal("0.001")), "MaterialBaseUnit": unit})
        pos, items = (self.rows("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder"),
                      self.rows("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrderItem"))
        buyable = [c for c in catalogue if c[1] != "FERT"]
        for n in range(30):
            sup = rng.randrange(len(SUPPLIERS))
            po = f"45000{n + 1:05d}"
            ordered = EPOCH - dt.timedelta(days=rng.randint(1, 60))
            pos.append({"PurchaseOrder": po, "CompanyCode": "1000", "PurchaseOrderType": "NB",
                        "Supplier": SUPPLIERS[sup][0], "SupplierName": SUPPLIERS[sup][1],
                        "PurchasingOrganization": "1000", "PurchasingGroup": rng.choice(["P01", "P02"]),
                        "DocumentCurrency": "EUR", "PurchaseOrderDate": ordered.replace(hour=0, minute=0),
                        "PurchasingProcessingStatus": "05", "LastChangeDateTime": self._stamp()})
            mine = [c for c in buyable if c[5] == sup] or buyable
            for i in range(rng.randint(1, 4)):
                part, _t, desc, unit, _g, _s, price = rng.choice(mine)
                qty = Decimal(rng.choice([50, 100, 250, 500, 1000, 2000] if unit != "PC" or _t != "ERSA"
                                         else [1, 2, 4, 6]))
                delivery = ordered + dt.timedelta(days=rng.randint(7, 45))
                done = delivery < EPOCH and rng.random() < 0.7
                items.append({"PurchaseOrder": po, "PurchaseOrderItem": f"{(i + 1) * 10:05d}", "Material": part,
                              "Plant": rng.choice(list(PLANTS)), "StorageLocation": "0004" if _t in ("ERSA", "HIBE")
                              else "0001", "PurchaseOrderItemText": desc[:40], "OrderQuantity": qty,
                              "PurchaseOrderQuantityUnit": unit, "NetPriceAmount": Decimal(price),
                              "DocumentCurrency": "EUR", "ScheduleLineDeliveryDate": delivery.replace(hour=0, minute=0),
                              "IsCompletelyDelivered": done,
                              "GoodsReceiptQuantity": qty if done else Decimal(0)})
        ccs = self.rows("API_COSTCENTER_SRV", "A_CostCenter")
        for cc, name, desc in COST_CENTERS:
            planned = Decimal(rng.randint(80, 900) * 1000)
            ccs.append({"ControllingArea": "A000", "CostCenter": f"000000{cc}", "ValidityEndDate":
                        dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "ValidityStartDate": dt.datetime(2020, 1, 1,
                                                                                                   tzinfo=dt.UTC),
                        "CostCenterName": name, "CostCenterDescription": desc, "CompanyCode": "1000",
                        "CostCenterCategory": "H" if cc < "9000" else "W", "ProfitCenter": "YB100",
                        "CostCtrResponsiblePersonName": rng.choice(["K. Brandt", "J. Novak", "M. Weber", "P. Horak"]),
                        "Currency": "EUR", "PlannedCostsAmount": planned.quantize(Decimal("0.01")),
                        "ActualCostsAmount": (planned * Decimal(str(round(rng.uniform(0.1, 0.35), 2))))
                        .quantize(Decimal("0.01"))})
        for n in range(3):
            spare = rng.choice([c for c in catalogue if c[1] in ("ERSA", "HIBE")])
            self._insert_reservation({"GoodsMovementType": "201", "CostCenter": "0000004210",
                                      "GoodsRecipientName": "MAINT", "IssuingOrReceivingPlant": "1010"},
                                     [{"Product": spare[0], "Plant": "1010", "StorageLocation": "0004",
                                       "ResvnItmRequiredQtyInBaseUnit": Decimal(n + 1), "BaseUnit": spare[3],
                                       "MatlCompRequirementDate": EPOCH + dt.timedelta(days=n + 2)}])

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
            row = self._find("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentItem",
                             {"Reservation": reservation, "ReservationItem": item})
            row["ResvnItmRequiredQtyInBaseUnit"] = Decimal(str(quantity)).quantize(Decimal("0.001"))
            row["LastChangeDateTime"] = self._stamp()

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

    # ------------------------------------------------------------------ entity helpers

    def _find(self, service: str, set_name: str, key: dict[str, Any]) -> dict[str, Any]:
        for r in self.rows(service, set_name):
            if all(r.get(k) == v for k, v in key.items()):
                return r
        raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{set_name}'")

    @staticmethod
    def etag(etype: EntityType, row: dict[str, Any]) -> str | None:
        conc = [p for p in etype.props if p.concurrency]
        if not conc:
            return None
        value = row.get(conc[0].name)
        stamp = value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" if isinstance(value, dt.datetime) else str(value)
        return f"W/\"datetime'{quote(stamp)}'\""

    def _key_string(self, etype: EntityType, row: dict[str, Any]) -> str:
        parts = [f"{k}={self._literal(row.get(k))}" for k in etype.keys]
        return parts[0].split("=", 1)[1] if len(parts) == 1 else ",".join(parts)

    @staticmethod
    def _literal(v: Any) -> str:
        if isinstance(v, dt.datetime):
            return f"datetime'{v.strftime('%Y-%m-%dT%H:%M:%S')}'"
        if isinstance(v, Decimal):
            return f"{v}M"
        return "'" + str(v).replace("'", "''") + "'"

    def _json_value(self, ptype: str, value: Any, scale: int | None) -> Any:
        if value is None:
            return None
        if ptype == "Edm.DateTime":
            return _ms(value)
        if ptype == "Edm.Decimal":
            return str(Decimal(value).quantize(Decimal(1).scaleb(-(scale or 0))))
        return value

    def _entity_json(self, svc: Service, etype: EntityType, row: dict[str, Any], base: str,
                     select: list[str] | None = None) -> dict[str, Any]:
        uri = f"{base}{SERVICE_ROOT}{svc.name}/{etype.set_name}({quote(self._key_string(etype, row), safe=',=')})"
        meta: dict[str, Any] = {"id": uri, "uri": uri, "type": f"{svc.name}.{etype.name}"}
        tag = self.etag(etype, row)
        if tag:
            meta["etag"] = tag
        out: dict[str, Any] = {"__metadata": meta}
        for p in etype.props:
            if select is None or p.name in select:
                out[p.name] = self._json_value(p.type, row.get(p.name), p.scale)
        for n in etype.navs:
            if select is None:
                out[n.name] = {"__deferred": {"uri": f"{uri}/{n.name}"}}
        return out

    # ------------------------------------------------------------------ reads

    def _parse_key(self, etype: EntityType, raw: str) -> dict[str, Any]:
        parts, buf, quoted = [], "", False
        for ch in raw:
            if ch == "'":
                quoted = not quoted
            if ch == "," and not quoted:
                parts.append(buf)
                buf = ""
            else:
                buf += ch
        parts.append(buf)
        key: dict[str, Any] = {}
        for i, part in enumerate(parts):
            name, _, lit = part.partition("=") if "=" in part and not part.startswith("'") else ("", "", part)
            name = name or (etype.keys[i] if i < len(etype.keys) else "")
            if name not in etype.keys:
                raise ODataFault(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate '{raw}'")
            key[name] = _Filter(lit, etype)._primary()({})
        if set(key) != set(etype.keys):
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate '{raw}': all keys are required")
        return {k: (Decimal(v) if isinstance(v, Decimal) else v) for k, v in key.items()}

    def _collection(self, svc: Service, etype: EntityType, q: dict[str, str], base: str, path: str,
                    count_only: bool) -> tuple[int, Any]:
        rows = list(self.rows(svc.name, etype.set_name))
        if q.get("$filter"):
            pred = _Filter(q["$filter"], etype).parse()
            rows = [r for r in rows if pred(r)]
        if count_only:
            return 200, str(len(rows))
        if q.get("$orderby"):
            for clause in reversed([c.strip() for c in q["$orderby"].split(",") if c.strip()]):
                name, _, direction = clause.partition(" ")
                if name not in etype.names:
                    raise ODataFault(400, "SY/530", f"Property {name} not found in type {etype.name}")
                rows.sort(key=_sort_key(name), reverse=direction.strip().lower() == "desc")
        select = None
        if q.get("$select"):
            select = [s.strip() for s in q["$select"].split(",") if s.strip()]
            bad = [s for s in select if s not in etype.names]
            if bad:
                raise ODataFault(400, "SY/530", f"Property {bad[0]} not found in type {etype.name}")
        try:
            skip, top = int(q.get("$skip", 0)), int(q["$top"]) if "$top" in q else None
            token = int(q.get("$skiptoken", 0))
        except ValueError:
            raise ODataFault(400, "SY/530", "$top, $skip and $skiptoken must be integers") from None
        if skip < 0 or token < 0 or (top is not None and top < 0):
            raise ODataFault(400, "SY/530", "$top and $skip must not be negative")
        total = len(rows)
        start = skip + token
        end = total if top is None else min(total, skip + top)
        page_end = min(end, start + self.state.page_size)
        d: dict[str, Any] = {"results": [self._entity_json(svc, etype, r, base, select) for r in rows[start:page_end]]}
        if q.get("$inlinecount") == "allpages":
            d["__count"] = str(total)
        if page_end < end:
            nxt = {k: v for k, v in q.items() if k != "$skiptoken"}
            nxt["$skiptoken"] = str(token + self.state.page_size)
            d["__next"] = f"{base}{path}?{urlencode(nxt, safe='$', quote_via=quote)}"
        return 200, {"d": d}

    # ------------------------------------------------------------------ writes

    def _coerce(self, etype: EntityType, body: dict[str, Any], allowed: tuple[str, ...] | None = None
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

    def _items(self, body: dict[str, Any], nav: str) -> list[dict[str, Any]]:
        raw = body.get(nav)
        if isinstance(raw, dict):
            raw = raw.get("results")
        if not isinstance(raw, list) or not raw or not all(isinstance(i, dict) for i in raw):
            raise ODataFault(400, "06/402", f"At least one item is required ({nav})")
        return raw

    def _material(self, material: Any, plant: Any, unit: Any) -> None:
        prod = next((p for p in self.rows("API_PRODUCT_SRV", "A_Product") if p["Product"] == material), None)
        if prod is None:
            raise ODataFault(400, "M3/305", f"Material {material} does not exist")
        if plant not in PLANTS:
            raise ODataFault(400, "M3/351", f"Plant {plant} does not exist")
        if unit is not None and unit != prod["BaseUnit"]:
            raise ODataFault(400, "M3/347", f"Unit {unit} is not the base unit {prod['BaseUnit']} of {material}")

    def _create_pr(self, svc: Service, body: dict[str, Any], user: str) -> dict[str, Any]:
        head_t, item_t = svc.by_set("A_PurchaseRequisitionHeader"), svc.by_set("A_PurchaseRequisitionItem")
        head = self._coerce(head_t, body)
        raw_items = self._items(body, "to_PurchaseReqnItem")
        items = [self._coerce(item_t, i) for i in raw_items]
        for it in items:
            self._material(it.get("Material"), it.get("Plant"), it.get("BaseUnit"))
            qty = it.get("RequestedQuantity")
            if qty is None or qty <= 0:
                raise ODataFault(400, "06/216", "Enter a requested quantity greater than zero")
        heads = self.rows(svc.name, head_t.set_name)
        number = f"00100{len(heads) + 1:05d}"
        head.update(PurchaseRequisition=number, CreationDate=self.state.now.replace(hour=0, minute=0, second=0,
                                                                                     microsecond=0))
        head.setdefault("PurchaseRequisitionType", "NB")
        heads.append(head)
        rows = self.rows(svc.name, item_t.set_name)
        made = []
        for n, it in enumerate(items, start=1):
            unit = it.get("BaseUnit") or next(p["BaseUnit"] for p in self.rows("API_PRODUCT_SRV", "A_Product")
                                               if p["Product"] == it["Material"])
            row = {**it, "PurchaseRequisition": number, "PurchaseRequisitionItem": f"{n * 10:05d}",
                   "BaseUnit": unit, "CreatedByUser": user[:12], "ProcessingStatus": "N",
                   "LastChangeDateTime": self._stamp()}
            rows.append(row)
            made.append(row)
        return {"head": head, "items": made}

    def _insert_reservation(self, head: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        heads = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentHeader")
        number = f"{len(heads) + 1:010d}"
        head = {**head, "Reservation": number, "ReservationDate": self.state.now.replace(
            hour=0, minute=0, second=0, microsecond=0)}
        heads.append(head)
        rows = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentItem")
        made = []
        for n, it in enumerate(items, start=1):
            row = {**it, "Reservation": number, "ReservationItem": f"{n:04d}", "ReservationItemIsFinallyIssued": False,
                   "LastChangeDateTime": self._stamp()}
            rows.append(row)
            made.append(row)
        return {"head": head, "items": made}

    def _create_reservation(self, svc: Service, body: dict[str, Any]) -> dict[str, Any]:
        head_t, item_t = svc.by_set("A_ReservationDocumentHeader"), svc.by_set("A_ReservationDocumentItem")
        head = self._coerce(head_t, body)
        items = [self._coerce(item_t, i) for i in self._items(body, "to_ReservationDocumentItem")]
        if head.get("GoodsMovementType") not in ("201", "261", "311"):
            raise ODataFault(400, "M7/165", f"Movement type {head.get('GoodsMovementType')} is not allowed")
        if head.get("GoodsMovementType") == "201":
            ccs = {r["CostCenter"] for r in self.rows("API_COSTCENTER_SRV", "A_CostCenter")}
            if head.get("CostCenter") not in ccs:
                raise ODataFault(400, "KI/235", f"Cost center {head.get('CostCenter')} does not exist")
        for it in items:
            self._material(it.get("Product"), it.get("Plant"), it.get("BaseUnit"))
            if it.get("StorageLocation") not in STORAGE_LOCATIONS:
                raise ODataFault(400, "M7/018", f"Storage location {it.get('StorageLocation')} does not exist")
            qty = it.get("ResvnItmRequiredQtyInBaseUnit")
            if qty is None or qty <= 0:
                raise ODataFault(400, "M7/021", "Enter a quantity greater than zero")
            if it.get("MatlCompRequirementDate") is None:  # SAP defaults the requirement date to today
                it["MatlCompRequirementDate"] = self.state.now.replace(hour=0, minute=0, second=0, microsecond=0)
        return self._insert_reservation(head, items)

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
            status, payload = f.status, _odata_error(f.code, f.message)
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
                status, payload = self._collection(svc, etype, q, base, path, tail == "$count")
                return status, payload, {}
            if method == "POST":
                return self._post(svc, etype, body, base, user)
            raise ODataFault(405, "/IWFND/CM_MGW/004", f"Method {method} not allowed for an entity set")
        key = self._parse_key(etype, m.group(2))
        row = self._find(svc.name, etype.set_name, key)
        if method == "GET":
            if tail:
                raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{tail}'")
            tag = self.etag(etype, row)
            return 200, {"d": self._entity_json(svc, etype, row, base)}, ({"etag": tag} if tag else {})
        if method in ("PATCH", "MERGE", "PUT"):
            if not etype.updatable:
                raise ODataFault(405, "/IWBEP/CM_MGW_RT/006", f"Entity set {etype.set_name} is not updatable")
            current = self.etag(etype, row)
            given = hdr.get("if-match")
            if not given:
                raise ODataFault(428, "/IWBEP/CM_MGW_RT/025", "Precondition required: send If-Match with the ETag")
            if given not in ("*", current):
                raise ODataFault(412, "/IWBEP/CM_MGW_RT/022",
                                 "The entity was changed by another user; read it again (ETag mismatch)")
            try:
                changes = json.loads(body or b"{}")
            except ValueError:
                raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "Malformed JSON body") from None
            if not isinstance(changes, dict):
                raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "The body must be a JSON object")
            changes = {k: v for k, v in changes.items() if k not in etype.keys or v == row.get(k)}
            coerced = self._coerce(etype, {k: v for k, v in changes.items() if k not in etype.keys},
                                   allowed=etype.updatable)
            qty = coerced.get("ResvnItmRequiredQtyInBaseUnit")
            if qty is not None and qty <= 0:
                raise ODataFault(400, "M7/021", "Enter a quantity greater than zero")
            row.update(coerced)
            row["LastChangeDateTime"] = self._stamp()
            return 204, None, {"etag": self.etag(etype, row) or ""}
        raise ODataFault(405, "/IWFND/CM_MGW/004", f"Method {method} not allowed")

    def _post(self, svc: Service, etype: EntityType, body: bytes, base: str, user: str
              ) -> tuple[int, Any, dict[str, str]]:
        if not etype.creatable:
            raise ODataFault(405, "/IWBEP/CM_MGW_RT/005", f"Entity set {etype.set_name} is not creatable")
        try:
            data = json.loads(body or b"")
        except ValueError:
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "Malformed JSON body") from None
        if not isinstance(data, dict):
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/004", "The body must be a JSON object")
        if etype.set_name == "A_PurchaseRequisitionHeader":
            made, nav = self._create_pr(svc, data, user), "to_PurchaseReqnItem"
        else:
            made, nav = self._create_reservation(svc, data), "to_ReservationDocumentItem"
        item_t = svc.by_type(etype.navs[0].target)
        d = self._entity_json(svc, etype, made["head"], base)
        d[nav] = {"results": [self._entity_json(svc, item_t, i, base) for i in made["items"]]}
        return 201, {"d": d}, {"location": d["__metadata"]["uri"]}

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
