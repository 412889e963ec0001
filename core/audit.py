"""Append-only, per-tenant hash-chained audit records.

Each event's hash covers its content and the previous event's hash, so editing or removing a
row anywhere breaks `verify_chain`. Appends for one tenant are serialised with a transaction
advisory lock (the app role has no UPDATE right, so SELECT … FOR UPDATE is not an option).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.models import AuditEvent


def _digest(prev_hash: str | None, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(((prev_hash or "") + "|" + body).encode()).hexdigest()


def _payload(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": str(ev.id),
        "tenant_id": str(ev.tenant_id),
        "ts": ev.ts.astimezone(dt.UTC).isoformat(),
        "actor": ev.actor,
        "actor_role": ev.actor_role,
        "action": ev.action,
        "resource_type": ev.resource_type,
        "resource_id": ev.resource_id,
        "outcome": ev.outcome,
        "details": ev.details,
    }


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: str,
    action: str,
    actor_role: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"audit:{tenant_id}"}
    )
    prev = session.execute(
        select(AuditEvent.hash).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.seq.desc()).limit(1)
    ).scalar()
    ev = AuditEvent(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        ts=dt.datetime.now(dt.UTC),
        actor=actor,
        actor_role=actor_role,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome=outcome,
        details=json.loads(json.dumps(details or {}, default=str)),
        prev_hash=prev,
    )
    ev.hash = _digest(prev, _payload(ev))
    session.add(ev)
    session.flush()
    return ev


def verify_chain(session: Session, tenant_id: uuid.UUID) -> tuple[bool, int, str | None]:
    """(ok, events checked, id of the first broken event)."""
    prev: str | None = None
    n = 0
    for ev in session.execute(
        select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.seq)
    ).scalars():
        n += 1
        if ev.prev_hash != prev or _digest(prev, _payload(ev)) != ev.hash:
            return False, n, str(ev.id)
        prev = ev.hash
    return True, n, None
