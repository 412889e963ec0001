"""Polling, storing, alerting and dispatching, per tenant (every query runs under the tenant's RLS)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import smtplib
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from connectors.mes import MESClient
from core import audit
from core.database import system_session, tenant_session
from core.errors import NotFound
from core.models import Alert, AlertDelivery, AlertRule, MESObservation, Tenant
from core.settings import get_settings
from monitoring.rules import Breach, Rule, evaluate_machines, evaluate_quality

WEBHOOK_ATTEMPTS = 3


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


# --------------------------------------------------------------------------- alerts


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


def raise_alert(tenant_id: uuid.UUID, b: Breach) -> tuple[Alert | None, str]:
    """Open an alert (or escalate the open one). Returns (alert, 'opened'|'escalated'|'duplicate')."""
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
    alert.root_cause = root_cause_draft(tenant_id, b)
    with tenant_session(tenant_id) as s:
        s.execute(update(Alert).where(Alert.id == alert.id).values(root_cause=alert.root_cause))
    return alert, "opened"


def _webhook(url: str, payload: dict) -> tuple[bool, int, str | None]:
    timeout = get_settings().alert_webhook_timeout_s
    last = None
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        try:
            r = httpx.post(url, json=payload, timeout=timeout)
            if r.status_code < 300:
                return True, attempt, None
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if attempt < WEBHOOK_ATTEMPTS:
            time.sleep(0.2 * 2 ** (attempt - 1))
    return False, WEBHOOK_ATTEMPTS, last


def _email(to: list[str], subject: str, body: str) -> tuple[bool, int, str | None]:
    s = get_settings()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = s.smtp_from, ", ".join(to), subject
    msg.set_content(body)
    try:
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
        return True, 1, None
    except (OSError, smtplib.SMTPException) as exc:
        return False, 1, f"{type(exc).__name__}: {exc}"[:300]


def public_target(channel: str, target: str) -> str:
    """A delivery target as shown to everyone who can list alerts. A webhook URL is a bearer secret (Teams,
    Slack and most chat hooks put the token in the path or query), so only its scheme, host and port
    are shown, with a fingerprint to tell hooks apart; the full URL stays in the admin-only rule settings
    (GET /v1/alert-rules)."""
    if channel != "webhook":
        return target
    fingerprint = hashlib.sha256(target.encode()).hexdigest()[:12]
    try:
        url = httpx.URL(target)
        host = url.host + (f":{url.port}" if url.port else "")
        return f"{url.scheme}://{host}/… (sha256:{fingerprint})"
    except (httpx.InvalidURL, TypeError, ValueError):
        return f"webhook (sha256:{fingerprint})"


def dispatch(tenant_id: uuid.UUID, alert: Alert, channels: dict, action: str) -> list[str]:
    title = f"[{alert.severity.upper()}] {'ESCALATED: ' if action == 'escalated' else ''}{alert.message}"
    text_body = f"{title}\n\n{alert.root_cause or ''}\n\nAlert {alert.id} — acknowledge in the platform."
    payload = {"title": title, "text": text_body, "severity": alert.severity,
               "alert": {"id": str(alert.id), "subject": alert.subject, "value": alert.value,
                         "opened_at": alert.opened_at.isoformat() if alert.opened_at else None}}
    results = []
    targets = [("webhook", u) for u in channels.get("webhooks", [])] + (
        [("email", ",".join(channels["emails"]))] if channels.get("emails") else [])
    for channel, target in targets:
        ok, attempts, err = (_webhook(target, payload) if channel == "webhook"
                             else _email(target.split(","), title, text_body))
        results.append(f"{channel}:{'delivered' if ok else 'dead_letter'}")
        with tenant_session(tenant_id) as s:
            s.add(AlertDelivery(tenant_id=tenant_id, alert_id=alert.id, channel=channel, target=target,
                                status="delivered" if ok else "dead_letter", attempts=attempts, last_error=err,
                                payload=payload))
            s.execute(update(Alert).where(Alert.id == alert.id).values(
                notify_count=Alert.notify_count + (1 if ok else 0), last_notified_at=dt.datetime.now(dt.UTC)))
    return results


def rule_channels(tenant_id: uuid.UUID, rule_id: str) -> dict:
    with tenant_session(tenant_id) as s:
        return s.execute(select(AlertRule.channels).where(AlertRule.id == uuid.UUID(rule_id))).scalar() or {}


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


def configure_mes(tenant_id: uuid.UUID, cfg: dict, *, actor: str, actor_role: str) -> dict:
    """Point a tenant's monitoring at its MES endpoint (audited)."""
    from core.tenancy import set_tenant_setting

    return set_tenant_setting(tenant_id, "mes", cfg, actor=actor, actor_role=actor_role)
