"""Alert rules, the alerts they opened and the notifications sent for them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.models import Alert, AlertDelivery, AlertRule


def rules(session: Session) -> list[AlertRule]:
    """The tenant's rules by name."""
    return list(session.execute(select(AlertRule).order_by(AlertRule.name)).scalars())


def replace_rules(session: Session, tenant_id: uuid.UUID, wanted: Sequence[dict[str, Any]]) -> list[str]:
    """Make the rule set `wanted` (dicts of AlertRule fields, `name` unique): a rule keeps its id while its
    name stays. Returns the names of the rules removed."""
    existing = {r.name: r for r in session.execute(select(AlertRule)).scalars()}
    keep = set()
    now = dt.datetime.now(dt.UTC)
    for w in wanted:
        r = existing.get(w["name"]) or AlertRule(id=uuid.uuid4(), tenant_id=tenant_id, name=w["name"])
        r.kind, r.threshold, r.scope, r.severity, r.enabled = (w["kind"], w["threshold"], w["scope"], w["severity"],
                                                                w["enabled"])
        r.channels = w["channels"]
        r.updated_at = now
        session.add(r)
        keep.add(w["name"])
    gone = [n for n in existing if n not in keep]
    if gone:
        session.execute(delete(AlertRule).where(AlertRule.name.in_(gone)))
    session.flush()
    return gone


def recent(session: Session, status: str | None = None, limit: int = 100) -> list[Alert]:
    """Alerts newest first, optionally of one status (open | acknowledged | resolved)."""
    q = select(Alert).order_by(Alert.opened_at.desc()).limit(limit)
    if status:
        q = q.where(Alert.status == status)
    return list(session.execute(q).scalars())


def deliveries(session: Session, alert_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[AlertDelivery]]:
    """The notification attempts of each alert, in the order stored."""
    out: dict[uuid.UUID, list[AlertDelivery]] = {}
    for d in session.execute(select(AlertDelivery).where(AlertDelivery.alert_id.in_(list(alert_ids)))).scalars():
        out.setdefault(d.alert_id, []).append(d)
    return out
