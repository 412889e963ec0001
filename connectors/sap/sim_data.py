"""The SAP simulator's data (connectors/sap/simulator.py): its plants, storage locations, suppliers,
material catalogue and cost centres, the in-memory state (rows per entity set, CSRF tokens, test controls,
a simulated clock), and the deterministic seeding of a system from a random seed.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connectors.sap.sim_odata import ODataFault

EPOCH = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)
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

    def rows(self, service: str, set_name: str) -> list[dict[str, Any]]:
        return self.data.setdefault(f"{service}/{set_name}", [])

    def stamp(self) -> dt.datetime:
        """A strictly increasing change time (the ETag source)."""
        self.seq += 1
        return self.now + dt.timedelta(microseconds=self.seq)

    def find(self, service: str, set_name: str, key: dict[str, Any]) -> dict[str, Any]:
        for r in self.rows(service, set_name):
            if all(r.get(k) == v for k, v in key.items()):
                return r
        raise ODataFault(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{set_name}'")

    def insert_reservation(self, head: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        heads = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentHeader")
        number = f"{len(heads) + 1:010d}"
        head = {**head, "Reservation": number, "ReservationDate": self.now.replace(
            hour=0, minute=0, second=0, microsecond=0)}
        heads.append(head)
        rows = self.rows("API_RESERVATION_DOCUMENT_SRV", "A_ReservationDocumentItem")
        made = []
        for n, it in enumerate(items, start=1):
            row = {**it, "Reservation": number, "ReservationItem": f"{n:04d}", "ReservationItemIsFinallyIssued": False,
                   "LastChangeDateTime": self.stamp()}
            rows.append(row)
            made.append(row)
        return {"head": head, "items": made}


def generate(state: SimState, rng: random.Random, extra: int) -> list[tuple[str, str, str, str, str, int, str]]:
    """Seed a simulator's rows: products and plant data, stock (about one material-plant in six below its
    reorder point), purchase orders with items, cost centres and three maintenance reservations. Returns the
    material catalogue (CATALOGUE plus `extra` generated bolts)."""
    catalogue = list(CATALOGUE)
    sizes = [(d, ln) for d in (6, 8, 10, 12, 16) for ln in (16, 20, 25, 30, 40, 50, 60, 80)]
    for i, (d, ln) in enumerate(sizes[:extra]):
        catalogue.append((f"RM-{1100 + i}", "ROH", f"Hex bolt M{d}x{ln} 8.8 zinc flake", "PC", "FAST", 2,
                          f"{0.03 + d * ln / 6000:.2f}"))
    products, plant_data, stock = (state.rows("API_PRODUCT_SRV", "A_Product"),
                                   state.rows("API_PRODUCT_SRV", "A_ProductPlant"),
                                   state.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod"))
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
    pos, items = (state.rows("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder"),
                  state.rows("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrderItem"))
    buyable = [c for c in catalogue if c[1] != "FERT"]
    for n in range(30):
        sup = rng.randrange(len(SUPPLIERS))
        po = f"45000{n + 1:05d}"
        ordered = EPOCH - dt.timedelta(days=rng.randint(1, 60))
        pos.append({"PurchaseOrder": po, "CompanyCode": "1000", "PurchaseOrderType": "NB",
                    "Supplier": SUPPLIERS[sup][0], "SupplierName": SUPPLIERS[sup][1],
                    "PurchasingOrganization": "1000", "PurchasingGroup": rng.choice(["P01", "P02"]),
                    "DocumentCurrency": "EUR", "PurchaseOrderDate": ordered.replace(hour=0, minute=0),
                    "PurchasingProcessingStatus": "05", "LastChangeDateTime": state.stamp()})
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
    ccs = state.rows("API_COSTCENTER_SRV", "A_CostCenter")
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
        state.insert_reservation({"GoodsMovementType": "201", "CostCenter": "0000004210",
                                  "GoodsRecipientName": "MAINT", "IssuingOrReceivingPlant": "1010"},
                                 [{"Product": spare[0], "Plant": "1010", "StorageLocation": "0004",
                                   "ResvnItmRequiredQtyInBaseUnit": Decimal(n + 1), "BaseUnit": spare[3],
                                   "MatlCompRequirementDate": EPOCH + dt.timedelta(days=n + 2)}])
    return catalogue
