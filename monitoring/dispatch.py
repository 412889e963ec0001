"""Alert dispatch: webhook and e-mail delivery with retries, the channels a rule names, and the
redacted form of a target that may be shown to users."""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
import time
import uuid
from email.message import EmailMessage

import httpx
from sqlalchemy import select, update

from core.db.database import tenant_session
from core.models import Alert, AlertDelivery, AlertRule
from core.settings import get_settings

WEBHOOK_ATTEMPTS = 3


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


def send(channels: dict, title: str, body: str, payload: dict) -> list[tuple[str, str, bool, int, str | None]]:
    """Deliver one notification that is not an alert (e.g. a data steward's overdue review) to the webhooks
    and e-mail recipients of `channels` ({"webhooks": [...], "emails": [...]}), with the same retries.
    Returns (channel, target, delivered, attempts, error) per target; the caller records them."""
    out = []
    for url in channels.get("webhooks", []):
        ok, attempts, err = _webhook(url, payload)
        out.append(("webhook", url, ok, attempts, err))
    if channels.get("emails"):
        ok, attempts, err = _email(list(channels["emails"]), title, body)
        out.append(("email", ",".join(channels["emails"]), ok, attempts, err))
    return out


def rule_channels(tenant_id: uuid.UUID, rule_id: str) -> dict:
    with tenant_session(tenant_id) as s:
        return s.execute(select(AlertRule.channels).where(AlertRule.id == uuid.UUID(rule_id))).scalar() or {}
