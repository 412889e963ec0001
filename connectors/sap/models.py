"""Typed SAP records: every OData response is validated into these before anyone uses it.

Field names are Pythonic; the alias of each is SAP's property name (the client selects exactly the
aliases of the model it reads, so a missing property is a validation error, not a silent None).
Quantities and amounts are `Decimal` (SAP's Edm.Decimal): a value that is not a finite number, a
missing key or a wrong type makes the whole read fail (connectors.sap.client.SAPBadResponse).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Units of measure the platform accepts from SAP (ISO-like internal SAP units used by the simulator and
# typical of discrete manufacturing). The data-quality suites check the extracts against the same set.
ALLOWED_UNITS = frozenset({"PC", "KG", "G", "L", "M", "M2", "M3", "EA", "ST", "BOX", "PAL", "ROL", "H"})
Key = Annotated[str, Field(min_length=1, max_length=40)]
Quantity = Annotated[Decimal, Field(allow_inf_nan=False)]
# What a write may send: a four-character plant/storage location, a positive quantity SAP can store
# (13 digits, 3 decimals), a unit of at most three characters.
Code4 = Annotated[str, Field(min_length=4, max_length=4)]
QuantityIn = Annotated[Decimal, Field(gt=0, allow_inf_nan=False, max_digits=13, decimal_places=3)]
UnitIn = Annotated[str, Field(min_length=1, max_length=3)]


class SAPRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    @classmethod
    def sap_fields(cls) -> list[str]:
        """The SAP property names this model reads ($select)."""
        return [f.alias or name for name, f in cls.model_fields.items() if name != "etag"]


class Product(SAPRecord):
    product: Key = Field(alias="Product")
    product_type: str = Field(alias="ProductType")
    product_group: str = Field(alias="ProductGroup")
    base_unit: str = Field(alias="BaseUnit", min_length=1)
    description: str = Field(alias="ProductDescription")
    gross_weight: Quantity = Field(alias="GrossWeight")
    weight_unit: str = Field(alias="WeightUnit")
    deleted: bool = Field(alias="IsMarkedForDeletion")


class ProductPlant(SAPRecord):
    product: Key = Field(alias="Product")
    plant: Key = Field(alias="Plant")
    reorder_point: Quantity = Field(alias="ReorderThresholdQuantity")
    safety_stock: Quantity = Field(alias="SafetyStockQuantity")
    base_unit: str = Field(alias="BaseUnit", min_length=1)


class MaterialStock(SAPRecord):
    material: Key = Field(alias="Material")
    plant: Key = Field(alias="Plant")
    storage_location: Key = Field(alias="StorageLocation")
    batch: str = Field(alias="Batch")
    stock_type: str = Field(alias="InventoryStockType", min_length=1)
    quantity: Quantity = Field(alias="MatlWrhsStkQtyInMatlBaseUnit")
    unit: str = Field(alias="MaterialBaseUnit", min_length=1)

    @property
    def key(self) -> str:
        return "/".join((self.material, self.plant, self.storage_location, self.batch or "-", self.stock_type))


class PurchaseOrder(SAPRecord):
    purchase_order: Key = Field(alias="PurchaseOrder")
    company_code: str = Field(alias="CompanyCode")
    supplier: str = Field(alias="Supplier")
    supplier_name: str = Field(alias="SupplierName")
    currency: str = Field(alias="DocumentCurrency", min_length=3, max_length=5)
    order_date: dt.datetime = Field(alias="PurchaseOrderDate")
    status: str = Field(alias="PurchasingProcessingStatus")


class PurchaseOrderItem(SAPRecord):
    purchase_order: Key = Field(alias="PurchaseOrder")
    item: Key = Field(alias="PurchaseOrderItem")
    material: str = Field(alias="Material")
    plant: str = Field(alias="Plant")
    text: str = Field(alias="PurchaseOrderItemText")
    quantity: Quantity = Field(alias="OrderQuantity")
    unit: str = Field(alias="PurchaseOrderQuantityUnit", min_length=1)
    net_price: Quantity = Field(alias="NetPriceAmount")
    currency: str = Field(alias="DocumentCurrency", min_length=3, max_length=5)
    delivery_date: dt.datetime = Field(alias="ScheduleLineDeliveryDate")
    delivered: bool = Field(alias="IsCompletelyDelivered")
    received: Quantity = Field(alias="GoodsReceiptQuantity")

    @property
    def open_quantity(self) -> Decimal:
        return max(Decimal(0), self.quantity - self.received)


class CostCenter(SAPRecord):
    controlling_area: Key = Field(alias="ControllingArea")
    cost_center: Key = Field(alias="CostCenter")
    valid_to: dt.datetime = Field(alias="ValidityEndDate")
    name: str = Field(alias="CostCenterName")
    description: str = Field(alias="CostCenterDescription")
    company_code: str = Field(alias="CompanyCode")
    category: str = Field(alias="CostCenterCategory")
    responsible: str = Field(alias="CostCtrResponsiblePersonName")
    currency: str = Field(alias="Currency", min_length=3, max_length=5)
    planned_costs: Quantity = Field(alias="PlannedCostsAmount")
    actual_costs: Quantity = Field(alias="ActualCostsAmount")


# ------------------------------------------------------------------------------------------- writes


class ItemIn(BaseModel):
    """What every item of a document to create has: a material at a plant, a quantity and its unit."""

    model_config = ConfigDict(extra="forbid")
    material: Key
    plant: Code4
    quantity: QuantityIn
    unit: UnitIn


class PurchaseRequisitionItemIn(ItemIn):
    """One item of a purchase requisition to create."""

    delivery_date: dt.date | None = None
    text: Annotated[str, Field(max_length=40)] | None = None
    purchasing_group: Annotated[str, Field(max_length=3)] | None = None

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        if v not in ALLOWED_UNITS:
            raise ValueError(f"unit {v!r} is not an allowed unit")
        return v


class PurchaseRequisitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Annotated[str, Field(max_length=40)] = ""
    pr_type: Annotated[str, Field(min_length=2, max_length=4)] = "NB"
    items: Annotated[list[PurchaseRequisitionItemIn], Field(min_length=1, max_length=50)]


class PurchaseRequisitionItem(SAPRecord):
    purchase_requisition: Key = Field(alias="PurchaseRequisition")
    item: Key = Field(alias="PurchaseRequisitionItem")
    material: str = Field(alias="Material")
    plant: str = Field(alias="Plant")
    quantity: Quantity = Field(alias="RequestedQuantity")
    unit: str = Field(alias="BaseUnit", min_length=1)
    status: str = Field(alias="ProcessingStatus")
    etag: str | None = None


class PurchaseRequisition(SAPRecord):
    purchase_requisition: Key = Field(alias="PurchaseRequisition")
    pr_type: str = Field(alias="PurchaseRequisitionType")
    description: str | None = Field(alias="PurReqnDescription", default=None)
    created_on: dt.datetime = Field(alias="CreationDate")
    items: list[PurchaseRequisitionItem]


class ReservationItemIn(ItemIn):
    storage_location: Code4
    requirement_date: dt.date | None = None


class ReservationIn(BaseModel):
    """A reservation (goods issue planned against a cost centre: movement type 201)."""

    model_config = ConfigDict(extra="forbid")
    movement_type: Annotated[str, Field(pattern=r"^(201|261|311)$")] = "201"
    cost_center: Annotated[str, Field(min_length=1, max_length=10)] | None = None
    recipient: Annotated[str, Field(max_length=12)] = ""
    plant: Code4
    items: Annotated[list[ReservationItemIn], Field(min_length=1, max_length=50)]


class ReservationItem(SAPRecord):
    reservation: Key = Field(alias="Reservation")
    item: Key = Field(alias="ReservationItem")
    material: str = Field(alias="Product")
    plant: str = Field(alias="Plant")
    storage_location: str = Field(alias="StorageLocation")
    quantity: Quantity = Field(alias="ResvnItmRequiredQtyInBaseUnit")
    unit: str = Field(alias="BaseUnit", min_length=1)
    requirement_date: dt.datetime | None = Field(alias="MatlCompRequirementDate", default=None)
    finally_issued: bool = Field(alias="ReservationItemIsFinallyIssued")
    last_change: dt.datetime = Field(alias="LastChangeDateTime")
    etag: str | None = None  # the record's ETag: send it as If-Match to change the item


class Reservation(SAPRecord):
    reservation: Key = Field(alias="Reservation")
    movement_type: str = Field(alias="GoodsMovementType")
    cost_center: str | None = Field(alias="CostCenter", default=None)
    reservation_date: dt.datetime = Field(alias="ReservationDate")
    items: list[ReservationItem]


class ReservationItemChange(BaseModel):
    """The fields of a reservation item a write may change."""

    model_config = ConfigDict(extra="forbid")
    quantity: QuantityIn | None = None
    requirement_date: dt.date | None = None


T = TypeVar("T", bound=SAPRecord)


class SAPRead(BaseModel, Generic[T]):
    """One validated read: the records, where they came from and when (a record citation's as-of time)."""

    service: str
    entity_set: str
    url: str
    as_of: dt.datetime
    records: list[T]
    total: int | None = None  # $inlinecount
    pages: int = 1
