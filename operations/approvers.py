"""The approver chain and a tenant's operations policy (escalation timings and webhooks).

The chain is not configuration text: it is the tenant's active users a tenant admin granted the `approver`
permission, in the order their accounts were created; the proposer and anyone who already decided are left
out (`chain_for`). The state machine that uses them is operations/proposals.py."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.enums import Permission
from core.errors import InvalidInput
from core.repos import tenants
from core.settings import Settings, get_settings


@dataclass(frozen=True)
class OperationsPolicy:
    """A tenant's escalation timings and webhooks (tenant settings "operations", defaults from Settings). The
    approvers themselves come from the users' grants (`approvers`)."""

    escalate_after: dt.timedelta
    expiry: dt.timedelta
    webhooks: list[str]


def policy(session: Session, tenant_id: uuid.UUID, settings: Settings | None = None) -> OperationsPolicy:
    s = settings or get_settings()
    cfg = tenants.settings(session, tenant_id).get("operations") or {}
    return OperationsPolicy(
        escalate_after=dt.timedelta(minutes=float(cfg.get("escalate_after_minutes")
                                                  or s.operations_escalate_after_minutes)),
        expiry=dt.timedelta(hours=float(cfg.get("expiry_hours") or s.operations_expiry_hours)),
        webhooks=[str(w) for w in cfg.get("webhooks", []) if isinstance(w, str)])


@dataclass(frozen=True)
class Approver:
    """A user of the tenant holding the approver permission (granted by a tenant admin)."""

    username: str
    email: str | None
    display_name: str | None


def approvers(session: Session) -> list[Approver]:
    """The tenant's approver chain from the database grants: active users holding the approver permission, in
    the order their accounts were created (RLS: the session's tenant only)."""
    rows = session.execute(text("SELECT username, email, display_name FROM users WHERE is_active "
                                "AND :p = ANY(permissions) ORDER BY created_at, username"),
                           {"p": Permission.approver.value}).all()
    return [Approver(r.username, r.email, r.display_name) for r in rows]


def chain_for(chain: Sequence[Approver], proposer: str, decided: Sequence[str]) -> list[Approver]:
    """Who may still approve a proposal: the chain without its proposer and without those who decided."""
    return [a for a in chain if a.username != proposer and a.username not in decided]


def _note(eligible: int, missing: int) -> str | None:
    if missing <= 0 or eligible >= missing:
        return None
    if eligible == 0:
        return ("nobody can approve this proposal: no active user other than the proposer holds the approver "
                "permission — a tenant admin must grant it (PATCH /v1/admin/users/{id}, permissions: approver) "
                "before it expires")
    return (f"it needs {missing} more approval(s) but only {eligible} other user(s) hold the approver permission — "
            "a tenant admin must grant it to more users before it expires")


def set_policy(tenant_id: uuid.UUID, cfg: dict[str, Any], *, actor: str, actor_role: str) -> dict[str, Any]:
    """A tenant's escalation timings and webhooks (audited). The approvers are not set here: they are the users a
    tenant admin grants the approver permission."""
    from identity.tenancy import set_tenant_setting

    if "escalation" in cfg:
        raise InvalidInput("the escalation chain is not configured here: it is the users holding the approver "
                           "permission (grant it with PATCH /v1/admin/users/{id})", code="invalid_escalation")
    if not all(isinstance(w, str) for w in cfg.get("webhooks", [])):
        raise InvalidInput("webhooks must be URLs", code="invalid_escalation")
    return set_tenant_setting(tenant_id, "operations", cfg, actor=actor, actor_role=actor_role)
