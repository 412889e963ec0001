"""MES observations, per-tenant alert rules, alerts and their deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from core.db.migrations.helpers import CRUD, secure_tenant_tables, tenant_fk, timestamp, uuid_pk

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mes_observations", uuid_pk(), tenant_fk(),
        sa.Column("kind", sa.Text, nullable=False),  # machine_status | downtime | quality
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        timestamp(),
        sa.UniqueConstraint("tenant_id", "kind", "source_id", "digest", name="uq_mes_obs"),
    )
    op.create_index("ix_mes_obs_tenant_kind_time", "mes_observations", ["tenant_id", "kind", "observed_at"])
    op.create_table(
        "alert_rules", uuid_pk(), tenant_fk(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("scope", sa.Text),  # a machine id or line, or NULL for all
        sa.Column("severity", sa.Text, nullable=False, server_default="warning"),
        sa.Column("channels", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        timestamp(), timestamp("updated_at"),
        sa.CheckConstraint("kind IN ('downtime_minutes','defect_rate','inventory_below_min')", name="ck_rule_kind"),
        sa.CheckConstraint("severity IN ('info','warning','critical')", name="ck_rule_severity"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_alert_rule_name"),
    )
    op.create_table(
        "alerts", uuid_pk(), tenant_fk(),
        sa.Column("rule_id", sa.Uuid, sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),  # machine id, line or material
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("root_cause", sa.Text),
        sa.Column("evidence", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("notify_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_notified_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.Text),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.Text),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        timestamp("opened_at"), timestamp("updated_at"),
        sa.CheckConstraint("status IN ('open','acknowledged','resolved')", name="ck_alert_status"),
    )
    # One open alert per rule and subject: the de-duplication is a database invariant.
    op.execute("CREATE UNIQUE INDEX uq_alerts_open ON alerts (tenant_id, rule_id, subject) WHERE status <> 'resolved'")
    op.create_table(
        "alert_deliveries", uuid_pk(), tenant_fk(),
        sa.Column("alert_id", sa.Uuid, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.Text, nullable=False),  # webhook | email
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # delivered | dead_letter
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'")),
        timestamp(),
    )
    secure_tenant_tables(dict.fromkeys(("mes_observations", "alert_rules", "alerts", "alert_deliveries"), CRUD))

def downgrade() -> None:
    for t in ("alert_deliveries", "alerts", "alert_rules", "mes_observations"):
        op.drop_table(t)
