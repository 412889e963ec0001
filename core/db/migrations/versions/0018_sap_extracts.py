"""SAP extracts (issue 14, items 1-4): per-tenant copies of SAP data materialised by the Dagster assets of
assets/sap.py, under FORCE'd row-level security like the MES observations.

- `sap_stock`: stock snapshots (one per extract: history for trends), per material, plant, storage
  location, batch and stock type.
- `sap_materials`: the material master per plant (description, type, unit, reorder point, safety stock):
  the current state, replaced by each extract.
- `sap_open_po_items`: open purchase order items (not completely delivered), current state.
- `sap_cost_centers`: cost centres with planned and actual costs, current state.
- `sap_extracts`: one row per successful extract (rows, pages, source URL, as-of time): freshness and the
  as-of time of a record citation come from here.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

QTY = sa.Numeric(18, 3)
AMOUNT = sa.Numeric(18, 2)


def _at() -> sa.Column[Any]:
    return sa.Column("extracted_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "sap_stock", uuid_pk(), tenant_fk(), _at(),
        sa.Column("material", sa.Text, nullable=False),
        sa.Column("plant", sa.Text, nullable=False),
        sa.Column("storage_location", sa.Text, nullable=False),
        sa.Column("batch", sa.Text, nullable=False, server_default=""),
        sa.Column("stock_type", sa.Text, nullable=False),
        sa.Column("quantity", QTY, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        timestamp(),
        sa.UniqueConstraint("tenant_id", "extracted_at", "material", "plant", "storage_location", "batch",
                            "stock_type", name="uq_sap_stock_snapshot_row"),
    )
    op.create_index("ix_sap_stock_tenant_material_time", "sap_stock", ["tenant_id", "material", "extracted_at"])
    op.create_index("ix_sap_stock_tenant_time", "sap_stock", ["tenant_id", "extracted_at"])
    op.create_table(
        "sap_materials", uuid_pk(), tenant_fk(), _at(),
        sa.Column("material", sa.Text, nullable=False),
        sa.Column("plant", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("product_type", sa.Text, nullable=False),
        sa.Column("product_group", sa.Text, nullable=False),
        sa.Column("base_unit", sa.Text, nullable=False),
        sa.Column("reorder_point", QTY, nullable=False),
        sa.Column("safety_stock", QTY, nullable=False),
        sa.UniqueConstraint("tenant_id", "material", "plant", name="uq_sap_materials"),
    )
    op.create_table(
        "sap_open_po_items", uuid_pk(), tenant_fk(), _at(),
        sa.Column("purchase_order", sa.Text, nullable=False),
        sa.Column("item", sa.Text, nullable=False),
        sa.Column("supplier", sa.Text, nullable=False),
        sa.Column("supplier_name", sa.Text, nullable=False),
        sa.Column("material", sa.Text, nullable=False),
        sa.Column("plant", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("quantity", QTY, nullable=False),
        sa.Column("received", QTY, nullable=False),
        sa.Column("open_quantity", QTY, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("net_price", AMOUNT, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("order_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_date", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "purchase_order", "item", name="uq_sap_open_po_items"),
    )
    op.create_table(
        "sap_cost_centers", uuid_pk(), tenant_fk(), _at(),
        sa.Column("controlling_area", sa.Text, nullable=False),
        sa.Column("cost_center", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("responsible", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("planned_costs", AMOUNT, nullable=False),
        sa.Column("actual_costs", AMOUNT, nullable=False),
        sa.UniqueConstraint("tenant_id", "controlling_area", "cost_center", name="uq_sap_cost_centers"),
    )
    op.create_table(
        "sap_extracts", uuid_pk(), tenant_fk(), _at(),
        sa.Column("extract", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        timestamp(),
        sa.CheckConstraint("extract IN ('inventory','open_purchase_orders','materials','cost_centers')",
                           name="ck_sap_extract_kind"),
    )
    op.create_index("ix_sap_extracts_tenant_kind_time", "sap_extracts", ["tenant_id", "extract", "extracted_at"])
    secure_tenant_tables(dict.fromkeys(("sap_stock", "sap_materials", "sap_open_po_items", "sap_cost_centers",
                                        "sap_extracts"), CRUD))


def downgrade() -> None:
    for t in ("sap_extracts", "sap_cost_centers", "sap_open_po_items", "sap_materials", "sap_stock"):
        op.drop_table(t)
