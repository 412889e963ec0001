"""Records management for the compliance officer: the audit trail (read, verify), retention policies and
destruction holds of the caller's tenant.

Only holders of the `compliance_officer` permission (core.enums.Permission, from the token's roles claim or
granted by a tenant admin) get in — not tenant admins as such: their actions are what the trail records.
Denials are audited by the error handlers (`access.denied`); reading and verifying the trail, policy changes
and holds are audit records too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from compliance import audit, holds, retention
from core.enums import Permission
from core.errors import Forbidden
from core.security import Principal
from serving.deps import PrincipalDep, TenantSessionDep

router = APIRouter(prefix="/v1", tags=["records management"])


def _officer(principal: PrincipalDep) -> Principal:
    if not principal.has(Permission.compliance_officer):
        raise Forbidden("this needs the compliance_officer permission", code="compliance_officer_required")
    return principal


OfficerDep = Annotated[Principal, Depends(_officer)]


class AuditEventOut(BaseModel):
    id: uuid.UUID
    seq: int
    ts: dt.datetime
    actor: str
    actor_role: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    details: dict[str, Any]
    key_id: str | None


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null on the last page")


class ChainBreakOut(BaseModel):
    reason: str
    detail: str
    seq: int | None
    event_id: str | None


class VerifyOut(BaseModel):
    chain: str
    ok: bool
    events: int
    sealed: int
    unkeyed: int
    redacted: int
    first_seq: int | None
    last_seq: int | None
    head_mac: str | None
    anchor_seq: int | None
    checkpoints: int
    latest_checkpoint_seq: int | None
    key_ids: list[str]
    breaks: list[ChainBreakOut]
    verified_at: str


@router.get("/audit", response_model=AuditPage)
def list_audit(principal: OfficerDep, db: TenantSessionDep,
               actor: Annotated[str | None, Query(max_length=300)] = None,
               action: Annotated[str | None, Query(max_length=200, description="exact, or 'document.*'")] = None,
               resource_type: Annotated[str | None, Query(max_length=100)] = None,
               resource_id: Annotated[str | None, Query(max_length=300)] = None,
               outcome: Annotated[str | None, Query(max_length=50)] = None,
               since: Annotated[dt.datetime | None, Query()] = None,
               until: Annotated[dt.datetime | None, Query()] = None,
               before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> AuditPage:
    """The tenant's audit trail, newest first, filtered and paged (`before`: the previous page's `next_before`)."""
    flt = audit.EventFilter(actor=actor, action=action, resource_type=resource_type, resource_id=resource_id,
                            outcome=outcome, since=since, until=until)
    rows = audit.list_events(db, principal.tenant_id, flt, limit=limit, before_seq=before)
    audit.record(db, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="audit.read", resource_type="audit_chain", resource_id=str(principal.tenant_id),
                 details={"filters": {k: v for k, v in vars(flt).items() if v is not None}, "before": before,
                          "returned": len(rows)})
    return AuditPage(events=[AuditEventOut(**r) for r in rows],
                     next_before=rows[-1]["seq"] if len(rows) == limit else None)


@router.get("/audit/verify", response_model=VerifyOut)
def verify_audit(principal: OfficerDep, db: TenantSessionDep) -> VerifyOut:
    """Verify the tenant's audit chain now: links, keyed MACs, retention anchor, signed checkpoints."""
    res = audit.verify(db, principal.tenant_id)
    audit.record(db, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="audit.verified", resource_type="audit_chain", resource_id=res.chain,
                 outcome="success" if res.ok else "failure",
                 details={"ok": res.ok, "events": res.events, "breaks": [b.reason for b in res.breaks[:5]]})
    return VerifyOut(**res.as_dict())


class PolicyIn(BaseModel):
    days: int | None = Field(default=None, ge=1, le=36_500, description="null: back to the default period")


@router.get("/retention/policies")
def get_policies(principal: OfficerDep, db: TenantSessionDep) -> dict[str, Any]:
    """The tenant's retention schedule per record type (period, default, legal minimum, purge or anonymise)."""
    return retention.policies(db, principal.tenant_id)


@router.put("/retention/policies/{record_type}")
def put_policy(record_type: str, body: PolicyIn, principal: OfficerDep, db: TenantSessionDep) -> dict[str, Any]:
    """Set the tenant's retention period for one record type (never below its legal minimum; audited)."""
    return retention.set_policy(db, principal.tenant_id, record_type, body.days, actor=principal.subject,
                                actor_role=principal.role.value)


class HoldIn(BaseModel):
    scope: holds.HoldScope
    target: Annotated[str | None, Field(max_length=300, description="user subject, document or conversation id; "
                                                                    "omitted for a tenant hold")] = None
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ReleaseIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class HoldOut(BaseModel):
    id: uuid.UUID
    scope: str
    target: str
    reason: str
    placed_by: str
    placed_at: dt.datetime
    released_by: str | None
    released_at: dt.datetime | None
    release_reason: str | None


def _hold_out(h: holds.Hold) -> HoldOut:
    return HoldOut(**vars(h))


@router.get("/holds", response_model=list[HoldOut])
def list_holds(principal: OfficerDep, db: TenantSessionDep,
               include_released: Annotated[bool, Query()] = False) -> list[HoldOut]:
    return [_hold_out(h) for h in holds.list_holds(db, principal.tenant_id, active_only=not include_released)]


@router.post("/holds", response_model=HoldOut, status_code=status.HTTP_201_CREATED)
def place_hold(body: HoldIn, principal: OfficerDep, db: TenantSessionDep) -> HoldOut:
    """Place a destruction hold: what it covers is not purged, deleted or erased until it is released (audited)."""
    return _hold_out(holds.place(db, principal.tenant_id, scope=body.scope, target=body.target, reason=body.reason,
                                 placed_by=principal.subject, placed_by_role=principal.role.value))


@router.post("/holds/{hold_id}/release", response_model=HoldOut)
def release_hold(hold_id: uuid.UUID, body: ReleaseIn, principal: OfficerDep, db: TenantSessionDep) -> HoldOut:
    return _hold_out(holds.release(db, principal.tenant_id, hold_id, released_by=principal.subject,
                                   reason=body.reason, released_by_role=principal.role.value))
