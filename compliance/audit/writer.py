"""Writing the trail: `record` appends through the SQL function `audit_append` and seals the row with its keyed MAC
in the caller's transaction; `record_detached` does it in a transaction of its own (denials, failures); the actor
bound to a request or task for records written where no principal is at hand; restricted reads; and the listener
that records failed model calls (core.llm.model.FAILURE_LISTENERS)."""

from __future__ import annotations

import json
import logging
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.audit.chain import _clean, _mac
from compliance.audit.keys import load_keys
from core.llm.model import FAILURE_LISTENERS
from core.logging import current_request_id
from core.models import AuditEvent

log = logging.getLogger(__name__)


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
    """Append one event to the tenant's chain (tenant_id None: the platform chain) through `audit_append` and
    seal it with its keyed MAC, in the caller's transaction (see the module docstring)."""
    clean = _clean(details or {})
    if (request_id := current_request_id()) is not None:  # the API request this happened in (core.logging)
        clean.setdefault("request_id", request_id)
    actor, actor_role, resource_id = _clean(actor), _clean(actor_role), _clean(resource_id)
    row = session.execute(
        text("SELECT * FROM audit_append(CAST(:t AS uuid), :actor, :action, :role, :rtype, :rid, :outcome, "
             "CAST(:details AS jsonb))"),
        {"t": str(tenant_id) if tenant_id else None, "actor": actor, "action": action, "role": actor_role,
         "rtype": resource_type, "rid": resource_id, "outcome": outcome, "details": json.dumps(clean)},
    ).one()
    ev = AuditEvent(id=row.id, seq=row.seq, tenant_id=tenant_id, ts=row.ts, actor=actor, actor_role=actor_role,
                    action=action, resource_type=resource_type, resource_id=resource_id, outcome=outcome,
                    details=row.details, prev_hash=row.prev_hash, hash=row.hash)
    keys = load_keys()
    mac = _mac(keys, keys.active, row.prev_mac, ev)
    session.execute(text("SELECT audit_seal(:id, :kid, :mac)"), {"id": row.id, "kid": keys.active, "mac": mac})
    return ev


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


def record_restricted_read(session: Session, *, tenant_id: uuid.UUID | None, actor: str, actor_role: str | None,
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


def _record_model_failure(model: str, exc: Exception) -> None:
    record_failure("model.call.failed", resource_type="model", resource_id=model,
                   details={"error": type(exc).__name__})


FAILURE_LISTENERS.append(_record_model_failure)
