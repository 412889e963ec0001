"""The OData v2 services the simulator serves and the client reads, as data: entity types (keys,
typed properties with SAP's names), entity sets, and the header → item associations used by deep
inserts. Modelled on SAP's published S/4HANA APIs (a subset of their properties):

- API_PRODUCT_SRV               A_Product, A_ProductPlant (plant data with the reorder point)
- API_MATERIAL_STOCK_SRV        A_MatlStkInAcctMod (stock per material, plant, storage location, stock type)
- API_PURCHASEORDER_PROCESS_SRV A_PurchaseOrder, A_PurchaseOrderItem
- API_COSTCENTER_SRV            A_CostCenter
- API_PURCHASEREQ_PROCESS_SRV   A_PurchaseRequisitionHeader (+ items; create by deep insert)
- API_RESERVATION_DOCUMENT_SRV  A_ReservationDocumentHeader (+ items; create by deep insert; items
                                updated with If-Match against their ETag)
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_ROOT = "/sap/opu/odata/sap/"


@dataclass(frozen=True)
class Prop:
    name: str
    type: str  # Edm.String | Edm.Decimal | Edm.DateTime | Edm.Boolean | Edm.Int32
    nullable: bool = True
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    concurrency: bool = False  # ConcurrencyMode="Fixed": the ETag is computed from it


@dataclass(frozen=True)
class Nav:
    name: str
    target: str  # entity type name
    fk: tuple[str, ...]  # key properties shared by principal and dependent


@dataclass(frozen=True)
class EntityType:
    name: str  # e.g. A_ProductType
    set_name: str  # e.g. A_Product
    keys: tuple[str, ...]
    props: tuple[Prop, ...]
    navs: tuple[Nav, ...] = ()
    creatable: bool = False
    updatable: tuple[str, ...] = ()  # properties a MERGE/PATCH may change

    def prop(self, name: str) -> Prop:
        for p in self.props:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.props)


@dataclass(frozen=True)
class Service:
    name: str
    types: tuple[EntityType, ...]

    def by_set(self, set_name: str) -> EntityType:
        for t in self.types:
            if t.set_name == set_name:
                return t
        raise KeyError(set_name)

    def by_type(self, type_name: str) -> EntityType:
        for t in self.types:
            if t.name == type_name:
                return t
        raise KeyError(type_name)


def S(name: str, n: int | None = None, nullable: bool = True) -> Prop:
    return Prop(name, "Edm.String", nullable=nullable, max_length=n)


def D(name: str, precision: int = 13, scale: int = 3) -> Prop:
    return Prop(name, "Edm.Decimal", precision=precision, scale=scale)


def T(name: str, concurrency: bool = False) -> Prop:
    return Prop(name, "Edm.DateTime", precision=0 if not concurrency else 7, concurrency=concurrency)


PRODUCT = Service("API_PRODUCT_SRV", (
    EntityType("A_ProductType", "A_Product", ("Product",), (
        S("Product", 40, False), S("ProductType", 4), S("ProductGroup", 9), S("BaseUnit", 3),
        S("ProductDescription", 40), D("GrossWeight"), S("WeightUnit", 3), S("IndustryStandardName", 18),
        Prop("IsMarkedForDeletion", "Edm.Boolean"), T("LastChangeDate"))),
    EntityType("A_ProductPlantType", "A_ProductPlant", ("Product", "Plant"), (
        S("Product", 40, False), S("Plant", 4, False), S("PurchasingGroup", 3), S("MRPType", 2),
        D("ReorderThresholdQuantity"), D("SafetyStockQuantity"), S("BaseUnit", 3))),
))

STOCK = Service("API_MATERIAL_STOCK_SRV", (
    EntityType("A_MatlStkInAcctModType", "A_MatlStkInAcctMod",
               ("Material", "Plant", "StorageLocation", "Batch", "InventoryStockType"), (
        S("Material", 40, False), S("Plant", 4, False), S("StorageLocation", 4, False), S("Batch", 10, False),
        S("InventoryStockType", 2, False), D("MatlWrhsStkQtyInMatlBaseUnit"), S("MaterialBaseUnit", 3))),
))

PURCHASE_ORDER = Service("API_PURCHASEORDER_PROCESS_SRV", (
    EntityType("A_PurchaseOrderType", "A_PurchaseOrder", ("PurchaseOrder",), (
        S("PurchaseOrder", 10, False), S("CompanyCode", 4), S("PurchaseOrderType", 4), S("Supplier", 10),
        S("SupplierName", 80), S("PurchasingOrganization", 4), S("PurchasingGroup", 3), S("DocumentCurrency", 5),
        T("PurchaseOrderDate"), S("PurchasingProcessingStatus", 2), T("LastChangeDateTime", concurrency=True))),
    EntityType("A_PurchaseOrderItemType", "A_PurchaseOrderItem", ("PurchaseOrder", "PurchaseOrderItem"), (
        S("PurchaseOrder", 10, False), S("PurchaseOrderItem", 5, False), S("Material", 40), S("Plant", 4),
        S("StorageLocation", 4), S("PurchaseOrderItemText", 40), D("OrderQuantity"), S("PurchaseOrderQuantityUnit", 3),
        D("NetPriceAmount", 16, 2), S("DocumentCurrency", 5), T("ScheduleLineDeliveryDate"),
        Prop("IsCompletelyDelivered", "Edm.Boolean"), D("GoodsReceiptQuantity"))),
))

COST_CENTER = Service("API_COSTCENTER_SRV", (
    EntityType("A_CostCenterType", "A_CostCenter", ("ControllingArea", "CostCenter", "ValidityEndDate"), (
        S("ControllingArea", 4, False), S("CostCenter", 10, False), T("ValidityEndDate"), T("ValidityStartDate"),
        S("CostCenterName", 20), S("CostCenterDescription", 40), S("CompanyCode", 4), S("CostCenterCategory", 1),
        S("ProfitCenter", 10), S("CostCtrResponsiblePersonName", 20), S("Currency", 5),
        D("PlannedCostsAmount", 16, 2), D("ActualCostsAmount", 16, 2))),
))

PURCHASE_REQ = Service("API_PURCHASEREQ_PROCESS_SRV", (
    EntityType("A_PurchaseRequisitionHeaderType", "A_PurchaseRequisitionHeader", ("PurchaseRequisition",), (
        S("PurchaseRequisition", 10), S("PurchaseRequisitionType", 4), S("PurReqnDescription", 40),
        S("SourceDetermination", 1), T("CreationDate")),
        navs=(Nav("to_PurchaseReqnItem", "A_PurchaseRequisitionItemType", ("PurchaseRequisition",)),),
        creatable=True),
    EntityType("A_PurchaseRequisitionItemType", "A_PurchaseRequisitionItem", ("PurchaseRequisition",
                                                                               "PurchaseRequisitionItem"), (
        S("PurchaseRequisition", 10), S("PurchaseRequisitionItem", 5), S("Material", 40), S("Plant", 4),
        S("PurchaseRequisitionItemText", 40), D("RequestedQuantity"), S("BaseUnit", 3), T("DeliveryDate"),
        S("PurchasingGroup", 3), S("CreatedByUser", 12), S("ProcessingStatus", 1),
        T("LastChangeDateTime", concurrency=True))),
))

RESERVATION = Service("API_RESERVATION_DOCUMENT_SRV", (
    EntityType("A_ReservationDocumentHeaderType", "A_ReservationDocumentHeader", ("Reservation",), (
        S("Reservation", 10), S("GoodsMovementType", 3), S("CostCenter", 10), S("GoodsRecipientName", 12),
        T("ReservationDate"), S("IssuingOrReceivingPlant", 4)),
        navs=(Nav("to_ReservationDocumentItem", "A_ReservationDocumentItemType", ("Reservation",)),),
        creatable=True),
    EntityType("A_ReservationDocumentItemType", "A_ReservationDocumentItem", ("Reservation", "ReservationItem"), (
        S("Reservation", 10), S("ReservationItem", 4), S("Product", 40), S("Plant", 4), S("StorageLocation", 4),
        D("ResvnItmRequiredQtyInBaseUnit"), S("BaseUnit", 3), T("MatlCompRequirementDate"),
        Prop("ReservationItemIsFinallyIssued", "Edm.Boolean"), T("LastChangeDateTime", concurrency=True)),
        updatable=("ResvnItmRequiredQtyInBaseUnit", "MatlCompRequirementDate")),
))

SERVICES: dict[str, Service] = {s.name: s for s in (PRODUCT, STOCK, PURCHASE_ORDER, COST_CENTER, PURCHASE_REQ,
                                                     RESERVATION)}
