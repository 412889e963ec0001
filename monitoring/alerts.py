"""Alerts: raise one for a rule breach (with a root-cause draft from the maintenance/quality passages
that match it), acknowledge and resolve (audited). Every query runs under the tenant's RLS."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable

from sqlalchemy import select, text, update

from compliance import audit
from core.db.database import tenant_session
from core.errors import NotFound
from core.models import Alert
from monitoring.rules import Breach

log = logging.getLogger(__name__)


def root_cause_draft(tenant_id: uuid.UUID, b: Breach) -> str:
    """Structured summary of the MES evidence plus the maintenance/quality passages that match it.
    (The Maintenance Advisor / Quality Inspector agents take this over when the agent runtime lands.)"""
    from retrieval.search import Caller, search

    lines = [f"Root-cause draft (generated from MES data and documents; verify before acting): {b.message}."]
    with tenant_session(tenant_id) as s:
        if b.kind == "downtime_minutes":
            mid = b.context["machine_id"]
            history = s.execute(text(
                "SELECT payload FROM mes_observations WHERE kind = 'downtime' AND payload->>'machine_id' = :m "
                "ORDER BY observed_at DESC LIMIT 5"), {"m": mid}).scalars().all()
            lines.append(f"Downtime events recorded for {mid}: {len(history)}; reasons: "
                         + "; ".join(sorted({h.get('reason') or 'unknown' for h in history})) + ".")
            query = f"{b.context.get('machine', '')} {b.context.get('reason') or ''} troubleshooting maintenance"
        elif b.kind == "defect_rate":
            prev = s.execute(text(
                "SELECT payload FROM mes_observations WHERE kind = 'quality' AND payload->>'line' = :l "
                "ORDER BY observed_at DESC LIMIT 6"), {"l": b.subject}).scalars().all()
            rates = [f"{p['defects'] / p['inspected']:.1%}" for p in prev if p.get("inspected")]
            lines.append(f"Recent defect rates on line {b.subject} (newest first): {', '.join(rates)}.")
            query = f"defect {b.context.get('product', '')} line {b.subject} root cause corrective action"
        else:
            query = b.message
        hits = search(s, Caller("operator", ()), query, k=3).hits
    if hits:
        lines.append("Relevant passages:")
        for h in hits:
            snippet = " ".join(h.text.split())[:240]
            lines.append(f"- {h.title}{f' p.{h.page}' if h.page else ''}: {snippet}")
    else:
        lines.append("No maintenance or quality document matched; check the machine log.")
    return "\n".join(lines)


def raise_alert(tenant_id: uuid.UUID, b: Breach, *, drafter: Callable[[uuid.UUID, Breach], str] | None = None
                ) -> tuple[Alert | None, str]:
    """Open an alert (or escalate the open one). Returns (alert, 'opened'|'escalated'|'duplicate').
    `drafter` writes the root-cause draft: the agent runtime (agents.operational.alert_root_cause, passed in
    by the alert job: monitoring does not import agents); the evidence template below when it fails or is
    not given."""
    with tenant_session(tenant_id) as s:
        existing = s.execute(select(Alert).where(Alert.rule_id == uuid.UUID(b.rule_id), Alert.subject == b.subject,
                                                 Alert.status != "resolved").with_for_update()).scalar()
        if existing is not None:
            if not (b.escalated and existing.severity != "critical"):
                return existing, "duplicate"
            existing.severity, existing.value, existing.message = "critical", b.value, b.message
            existing.updated_at = dt.datetime.now(dt.UTC)
            audit.record(s, tenant_id=tenant_id, actor="mes-monitor", action="alert.escalate",
                         resource_type="alert", resource_id=str(existing.id), details=b.as_dict())
            s.flush()
            s.expunge(existing)
            return existing, "escalated"
        alert = Alert(id=uuid.uuid4(), tenant_id=tenant_id, rule_id=uuid.UUID(b.rule_id), subject=b.subject,
                      status="open", severity=b.severity, value=b.value, message=b.message,
                      evidence={**b.context, "episode": b.episode, "threshold": b.threshold})
        s.add(alert)
        s.flush()
        audit.record(s, tenant_id=tenant_id, actor="mes-monitor", action="alert.open", resource_type="alert",
                     resource_id=str(alert.id), details=b.as_dict())
        s.expunge(alert)
    alert.root_cause = None
    if drafter is not None:
        try:
            alert.root_cause = drafter(tenant_id, b)
        except Exception as exc:  # noqa: BLE001 - an alert is never lost to its draft; the template stands in
            log.warning("the agent runtime could not draft the root cause of alert %s (%s: %s); using the template",
                        alert.id, type(exc).__name__, str(exc)[:200])
    if alert.root_cause is None:
        alert.root_cause = root_cause_draft(tenant_id, b)
    with tenant_session(tenant_id) as s:
        s.execute(update(Alert).where(Alert.id == alert.id).values(root_cause=alert.root_cause))
    return alert, "opened"



def set_alert_status(tenant_id: uuid.UUID, alert_id: uuid.UUID, status: str, *, actor: str, actor_role: str,
                     note: str | None = None) -> Alert:
    now = dt.datetime.now(dt.UTC)
    with tenant_session(tenant_id) as s:
        alert = s.execute(select(Alert).where(Alert.id == alert_id).with_for_update()).scalar()
        if alert is None:
            raise NotFound("alert not found", code="alert_not_found")
        if alert.status == "resolved":
            s.expunge(alert)
            return alert
        if status == "acknowledged":
            alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", actor, now
        else:
            alert.status, alert.resolved_by, alert.resolved_at = "resolved", actor, now
        alert.updated_at = now
        audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action=f"alert.{status}",
                     resource_type="alert", resource_id=str(alert_id), details={"note": note})
        s.flush()
        s.expunge(alert)
        return alert
