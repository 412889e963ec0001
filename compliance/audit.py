"""Append-only, per-tenant hash-chained audit records.

Each event's hash covers its content and the previous event's hash, so editing or removing a
row anywhere breaks `verify_chain`. There is one way in: the SQL function `audit_append` (SECURITY
DEFINER, owned by the owner role; migration 0012). The application role has no INSERT on
audit_events; the function takes the chain's advisory lock, stamps the time and computes the hash
itself, refuses a tenant other than the session's, and refuses the decision events only the platform
writes after verifying an approval token (`document.review.*`, `dataset.export.*`).

Rows written before 0012 were hashed here in Python (hash_alg 1); rows written by the function are
hashed in SQL (`eap_audit_digest`, hash_alg 2). `verify_chain` checks both.

The platform chain (tenant_id NULL) holds denials no tenant can be attached to, e.g. a request
without valid credentials; only the owner role can read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from core.llm.model import FAILURE_LISTENERS
from core.models import AuditEvent

log = logging.getLogger(__name__)


def _digest(prev_hash: str | None, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(((prev_hash or "") + "|" + body).encode()).hexdigest()


def _payload(ev: AuditEvent | Row[Any]) -> dict[str, Any]:
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


def _clean(value: Any) -> Any:
    """JSON-safe and storable: PostgreSQL text and jsonb refuse NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _clean(str(value))  # datetimes, UUIDs, NaN/inf (not JSON) …


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    actor_role: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain (tenant_id None: the platform chain) through `audit_append`,
    in the caller's transaction."""
    clean = _clean(details or {})
    row = session.execute(
        text("SELECT * FROM audit_append(CAST(:t AS uuid), :actor, :action, :role, :rtype, :rid, :outcome, "
             "CAST(:details AS jsonb))"),
        {"t": str(tenant_id) if tenant_id else None, "actor": _clean(actor), "action": action,
         "role": _clean(actor_role), "rtype": resource_type, "rid": _clean(resource_id), "outcome": outcome,
         "details": json.dumps(clean)},
    ).one()
    return AuditEvent(id=row.id, seq=row.seq, tenant_id=tenant_id, ts=row.ts, actor=_clean(actor),
                      actor_role=_clean(actor_role), action=action, resource_type=resource_type,
                      resource_id=_clean(resource_id), outcome=outcome, details=clean, prev_hash=row.prev_hash,
                      hash=row.hash)


def record_detached(tenant_id: uuid.UUID | None, **event: Any) -> None:
    """Append in a transaction of its own, as the application role, so the record survives the caller's
    rollback (denials, failures). Never raises: a failure to audit is logged instead."""
    from core.db.database import app_engine, tenant_session

    try:
        if tenant_id is not None:
            with tenant_session(tenant_id) as s:
                record(s, tenant_id=tenant_id, **event)
        else:
            with Session(app_engine()) as s, s.begin():
                record(s, tenant_id=None, **event)
    except Exception:
        log.exception("audit record %s could not be written", event.get("action"))


@dataclass(frozen=True)
class Actor:
    tenant_id: uuid.UUID | None
    actor: str
    actor_role: str | None = None


_actor: ContextVar[Actor | None] = ContextVar("eap_audit_actor", default=None)


def bind_actor(tenant_id: uuid.UUID | None, actor: str, actor_role: str | None = None) -> Token[Any]:
    """Who the current request (or task) acts for, for records written where no principal is at hand
    (e.g. a failed model call deep in an agent). The API binds it once it has authenticated a request
    (each request runs in a context of its own); `unbind_actor(token)` restores the previous one."""
    return _actor.set(Actor(tenant_id, actor, actor_role))


def unbind_actor(token: Token[Any]) -> None:
    _actor.reset(token)


def record_failure(action: str, *, resource_type: str, resource_id: str, details: dict[str, Any]) -> None:
    """A failure as its own record (own transaction) for the bound actor, or the platform chain with
    actor `system` when nothing is bound (Dagster runs, CLI)."""
    who = _actor.get() or Actor(None, "system")
    record_detached(who.tenant_id, actor=who.actor, actor_role=who.actor_role, action=action,
                    resource_type=resource_type, resource_id=resource_id, outcome="failure", details=details)


def record_restricted_read(session: Session, *, tenant_id: uuid.UUID, actor: str, actor_role: str | None,
                           resource_type: str, resource_id: str, labels: list[dict[str, Any]]) -> bool:
    """Record a read of stored answers or a trace that carry Class III/IV content, in the caller's
    transaction. `labels` are the access labels of what is being shown (agents/answer_access.py:
    {"classification": highest class, "sources": [{"document_id", "classification"}, …]}); one event
    `<resource_type>.read_restricted` names the Class III/IV documents and the highest class. Returns
    whether it recorded."""
    top = max((int(lb.get("classification") or 1) for lb in labels if lb), default=1)
    if top < 3:
        return False
    docs = sorted({str(src.get("document_id")) for lb in labels if lb for src in lb.get("sources", [])
                   if int(src.get("classification") or 1) >= 3})
    record(session, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action=f"{resource_type}.read_restricted",
           resource_type=resource_type, resource_id=resource_id, details={"documents": docs, "max_class": top})
    return True


_VERIFY_SQL = """
SELECT id, tenant_id, ts, actor, actor_role, action, resource_type, resource_id, outcome, details, prev_hash, hash,
       hash_alg, eap_audit_digest(prev_hash, id, tenant_id, ts, actor, actor_role, action, resource_type,
                                  resource_id, outcome, details) AS sql_digest
FROM audit_events WHERE {where} ORDER BY seq
"""


def verify_chain(session: Session, tenant_id: uuid.UUID | None) -> tuple[bool, int, str | None]:
    """(ok, events checked, id of the first broken event). tenant_id None: the platform chain."""
    where = "tenant_id = CAST(:t AS uuid)" if tenant_id is not None else "tenant_id IS NULL"
    prev: str | None = None
    n = 0
    for ev in session.execute(text(_VERIFY_SQL.format(where=where)), {"t": str(tenant_id) if tenant_id else None}):
        n += 1
        expected = ev.sql_digest if ev.hash_alg == 2 else _digest(prev, _payload(ev))
        if ev.prev_hash != prev or expected != ev.hash:
            return False, n, str(ev.id)
        prev = ev.hash
    return True, n, None


def _record_model_failure(model: str, exc: Exception) -> None:
    record_failure("model.call.failed", resource_type="model", resource_id=model,
                   details={"error": type(exc).__name__})


FAILURE_LISTENERS.append(_record_model_failure)
