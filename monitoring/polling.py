"""Polling MES per tenant: fetch machine status, downtime and quality reports through the MES client
(connectors.mes), store the observations, evaluate the rules, and resolve alerts whose condition cleared.
Every query runs under the tenant's RLS."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from connectors.mes import MESClient
from core.db.database import system_session, tenant_session
from core.models import Alert, AlertRule, MESObservation, Tenant
from monitoring.alerts import set_alert_status
from monitoring.rules import Breach, Rule, evaluate_machines, evaluate_quality


def tenants_with_mes() -> list[tuple[uuid.UUID, str, dict]]:
    with system_session() as s:
        rows = s.execute(select(Tenant.id, Tenant.name, Tenant.settings)).all()
    return [(tid, name, st["mes"]) for tid, name, st in rows if isinstance(st, dict) and st.get("mes")]


def client_for(cfg: dict) -> MESClient:
    return MESClient(cfg["base_url"], timeout_s=float(cfg.get("timeout_s", 5)), retries=int(cfg.get("retries", 2)),
                     backoff_s=float(cfg.get("backoff_s", 0.2)))


def load_rules(tenant_id: uuid.UUID) -> list[Rule]:
    with tenant_session(tenant_id) as s:
        rows = s.execute(select(AlertRule).where(AlertRule.enabled.is_(True))).scalars().all()
        return [Rule(str(r.id), r.name, r.kind, r.threshold, r.scope, r.severity) for r in rows]


def _store(tenant_id: uuid.UUID, kind: str, items: list[tuple[str, dt.datetime, dict]]) -> int:
    if not items:
        return 0
    rows = [{"id": uuid.uuid4(), "tenant_id": tenant_id, "kind": kind, "source_id": sid, "observed_at": at,
             "payload": payload,
             "digest": hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]}
            for sid, at, payload in items]
    with tenant_session(tenant_id) as s:
        res = s.execute(pg_insert(MESObservation).values(rows).on_conflict_do_nothing(constraint="uq_mes_obs")
                        .returning(MESObservation.id))
        return len(res.all())


def _open_subjects(tenant_id: uuid.UUID) -> dict[tuple[str, str], Alert]:
    with tenant_session(tenant_id) as s:
        rows = s.execute(select(Alert).where(Alert.status != "resolved")).scalars().all()
        return {(str(a.rule_id), a.subject): a for a in rows}


@dataclass
class PollResult:
    tenant_id: uuid.UUID
    stored: int = 0
    breaches: list[Breach] = field(default_factory=list)  # new or escalated: need the alert job
    resolved: int = 0
    cursor: dict = field(default_factory=dict)


def _needs_action(b: Breach, open_alerts: dict) -> bool:
    alert = open_alerts.get((b.rule_id, b.subject))
    if alert is None:
        return True
    return b.escalated and alert.severity != "critical"  # re-notify once on escalation


def _auto_resolve(tenant_id: uuid.UUID, cleared: set[tuple[str, str]], open_alerts: dict) -> int:
    n = 0
    for key in cleared:
        alert = open_alerts.get(key)
        if alert is not None:
            set_alert_status(tenant_id, alert.id, "resolved", actor="mes-monitor", actor_role="system",
                             note="condition cleared in MES data")
            n += 1
    return n


def poll_machines(tenant_id: uuid.UUID, cfg: dict, cursor: dict) -> PollResult:
    """Machine status + downtime events. Raises MESError (cursor untouched) when MES fails."""
    client = client_for(cfg)
    status = client.machine_status()
    since = dt.datetime.fromisoformat(cursor["downtime_since"]) if cursor.get("downtime_since") else None
    events = client.downtime_events(since)
    res = PollResult(tenant_id, cursor=dict(cursor))
    res.stored += _store(tenant_id, "machine_status",
                         [(m.machine_id, status.as_of, m.model_dump(mode="json")) for m in status.machines])
    res.stored += _store(tenant_id, "downtime",
                         [(e.event_id, e.start, e.model_dump(mode="json")) for e in events.events])
    res.cursor["downtime_since"] = status.as_of.isoformat()
    rules = load_rules(tenant_id)
    breaches, cleared = evaluate_machines(rules, status)
    open_alerts = _open_subjects(tenant_id)
    res.breaches = [b for b in breaches if _needs_action(b, open_alerts)]
    res.resolved = _auto_resolve(tenant_id, cleared, open_alerts)
    return res


def poll_quality(tenant_id: uuid.UUID, cfg: dict, cursor: dict) -> PollResult:
    client = client_for(cfg)
    since = dt.datetime.fromisoformat(cursor["quality_since"]) if cursor.get("quality_since") else None
    reports = client.quality_reports(since)
    res = PollResult(tenant_id, cursor=dict(cursor))
    res.stored = _store(tenant_id, "quality", [(r.report_id, r.period_end, r.model_dump(mode="json"))
                                               for r in reports.reports])
    if reports.reports:
        res.cursor["quality_since"] = max(r.period_end for r in reports.reports).isoformat()
    rules = load_rules(tenant_id)
    # Evaluate on the latest stored report per line (a tick without new reports re-checks nothing new).
    breaches, cleared = evaluate_quality(rules, reports.reports)
    open_alerts = _open_subjects(tenant_id)
    res.breaches = [b for b in breaches if _needs_action(b, open_alerts)]
    res.resolved = _auto_resolve(tenant_id, cleared, open_alerts)
    return res


def configure_mes(tenant_id: uuid.UUID, cfg: dict, *, actor: str, actor_role: str) -> dict:
    """Point a tenant's monitoring at its MES endpoint (audited)."""
    from identity.tenancy import set_tenant_setting

    return set_tenant_setting(tenant_id, "mes", cfg, actor=actor, actor_role=actor_role)
