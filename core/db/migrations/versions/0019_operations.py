"""operations (issue 14, items 5 and 6): the read-only reporting schema the SQL Guard queries, and write
proposals with their approvals.

- Schema `reporting`: views over the stored MES observations and the SAP extracts of 0018.
  Every view is `security_invoker`: it is evaluated with the privileges of the querying role, so the
  row-level security of the tables underneath (tenant isolation) applies to the application role. A view
  owned by the owner role without it would read every tenant's rows. The application role gets SELECT
  on the views and nothing else in the schema.
- `operation_proposals`: a write to a connected system (MES, SAP) that a person or an agent proposed; it is
  executed by the Dagster job `execute_operation` only after approval by someone else. `idempotency_key`
  is sent with the write, so a retried execution after a crash cannot write twice.
- `operation_approvals`: one row per approver decision (high-risk proposals need two approvals).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import roles, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

STATUSES = ("proposed", "approved", "rejected", "expired", "cancelled", "executing", "executed", "failed")

# Latest state per machine, downtime events and quality reports, from the observations the MES sensors
# store (monitoring/polling.py). JSON payload fields become typed columns; tenant_id is not exposed (RLS
# filters by it).
MES_VIEWS = {
    "machine_status": """
        SELECT DISTINCT ON (o.source_id)
               o.source_id AS machine_id, o.payload->>'line' AS line, o.payload->>'name' AS name,
               o.payload->>'state' AS state, (o.payload->>'since')::timestamptz AS since,
               o.payload->>'reason' AS reason, o.observed_at
          FROM public.mes_observations o
         WHERE o.kind = 'machine_status'
         ORDER BY o.source_id, o.observed_at DESC, o.created_at DESC""",
    "downtime_events": """
        SELECT DISTINCT ON (o.source_id)
               o.source_id AS event_id, o.payload->>'machine_id' AS machine_id, o.payload->>'line' AS line,
               (o.payload->>'start')::timestamptz AS started_at, (o.payload->>'end')::timestamptz AS ended_at,
               o.payload->>'reason' AS reason,
               round((extract(epoch FROM (o.payload->>'end')::timestamptz - (o.payload->>'start')::timestamptz)
                      / 60.0)::numeric, 1) AS duration_minutes
          FROM public.mes_observations o
         WHERE o.kind = 'downtime'
         ORDER BY o.source_id, (o.payload->>'end') IS NULL, o.created_at DESC""",
    "quality_reports": """
        SELECT DISTINCT ON (o.source_id)
               o.source_id AS report_id, o.payload->>'line' AS line, o.payload->>'product' AS product,
               (o.payload->>'period_start')::timestamptz AS period_start,
               (o.payload->>'period_end')::timestamptz AS period_end,
               (o.payload->>'inspected')::integer AS inspected, (o.payload->>'defects')::integer AS defects,
               round(((o.payload->>'defects')::numeric / NULLIF((o.payload->>'inspected')::numeric, 0)), 4)
                 AS defect_rate
          FROM public.mes_observations o
         WHERE o.kind = 'quality'
         ORDER BY o.source_id, o.created_at DESC""",
}

# The SAP extracts of migration 0018 (assets/sap.py): the latest stock snapshot, the stock history, the
# material master, open purchase order items and cost centres.
SAP_VIEWS = {
    "sap_inventory": """
        SELECT s.material, s.plant, s.storage_location, s.batch, s.stock_type, s.quantity, s.unit, s.extracted_at
          FROM public.sap_stock s
         WHERE s.extracted_at = (SELECT max(x.extracted_at) FROM public.sap_stock x)""",
    "sap_stock_history": """
        SELECT s.material, s.plant, s.storage_location, s.stock_type, s.quantity, s.unit, s.extracted_at
          FROM public.sap_stock s""",
    "sap_materials": """
        SELECT m.material, m.plant, m.description, m.product_type, m.product_group, m.base_unit, m.reorder_point,
               m.safety_stock, m.extracted_at
          FROM public.sap_materials m""",
    "sap_open_purchase_orders": """
        SELECT p.purchase_order, p.item, p.supplier, p.supplier_name, p.material, p.plant, p.text, p.quantity,
               p.received, p.open_quantity, p.unit, p.net_price, p.currency, p.order_date, p.delivery_date,
               p.extracted_at
          FROM public.sap_open_po_items p""",
    "sap_cost_centers": """
        SELECT c.controlling_area, c.cost_center, c.name, c.description, c.category, c.responsible, c.currency,
               c.planned_costs, c.actual_costs, c.extracted_at
          FROM public.sap_cost_centers c""",
}


def upgrade() -> None:
    app, _owner = roles()
    op.execute("CREATE SCHEMA IF NOT EXISTS reporting")
    op.execute("REVOKE ALL ON SCHEMA reporting FROM PUBLIC")
    op.execute(f'GRANT USAGE ON SCHEMA reporting TO "{app}"')
    for name, body in {**MES_VIEWS, **SAP_VIEWS}.items():
        op.execute(f"CREATE VIEW reporting.{name} WITH (security_invoker = true) AS {body}")
        op.execute(f'GRANT SELECT ON reporting.{name} TO "{app}"')

    op.create_table(
        "operation_proposals", uuid_pk(), tenant_fk(),
        sa.Column("target", sa.Text, nullable=False),  # mes | sap
        sa.Column("operation", sa.Text, nullable=False),  # e.g. create_work_order
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("preview", JSONB, nullable=False),  # [{"field", "current", "new"}] + summary
        sa.Column("precondition", JSONB, nullable=False, server_default=sa.text("'{}'")),  # etag/current values
        sa.Column("risk", sa.Text, nullable=False),
        sa.Column("required_approvals", sa.SmallInteger, nullable=False),
        sa.Column("proposer", sa.Text, nullable=False),
        sa.Column("proposer_role", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default="api"),  # api | chat
        sa.Column("status", sa.Text, nullable=False, server_default="proposed"),
        sa.Column("status_reason", sa.Text),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("escalation_level", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("escalated_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.Text),
        sa.Column("result", JSONB),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("executed_at", sa.DateTime(timezone=True)),
        timestamp(), timestamp("updated_at"),
        sa.CheckConstraint("status IN (" + ",".join(f"'{s}'" for s in STATUSES) + ")", name="ck_operation_status"),
        sa.CheckConstraint("risk IN ('low','medium','high')", name="ck_operation_risk"),
        sa.CheckConstraint("required_approvals BETWEEN 1 AND 5", name="ck_operation_required_approvals"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_operation_idempotency"),
    )
    op.create_index("ix_operation_proposals_tenant_status", "operation_proposals", ["tenant_id", "status"])
    op.create_index("ix_operation_proposals_status", "operation_proposals", ["status"])
    op.create_table(
        "operation_approvals", uuid_pk(), tenant_fk(),
        sa.Column("proposal_id", sa.Uuid, sa.ForeignKey("operation_proposals.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("approver", sa.Text, nullable=False),
        sa.Column("approver_role", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        timestamp(),
        sa.CheckConstraint("decision IN ('approve','reject')", name="ck_operation_approval_decision"),
        # One decision per person: a second approval by the same approver does not count twice.
        sa.UniqueConstraint("proposal_id", "approver", name="uq_operation_approval_once"),
    )
    op.create_index("ix_operation_approvals_proposal", "operation_approvals", ["tenant_id", "proposal_id"])
    secure_tenant_tables({"operation_proposals": "SELECT, INSERT, UPDATE", "operation_approvals": "SELECT, INSERT"})


def downgrade() -> None:
    op.drop_table("operation_approvals")
    op.drop_table("operation_proposals")
    op.execute("DROP SCHEMA IF EXISTS reporting CASCADE")
