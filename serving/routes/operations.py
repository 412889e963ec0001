"""Write operations with a human in the loop: propose, list, get, approve, reject, cancel. Approving needs the
approver permission and a different person than the proposer; the write itself is executed by the Dagster
job `execute_operation`, never by this API."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from core.models import Role
from operations import proposals, targets
from operations.proposals import ProposalView
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1", tags=["operations"])

Status = Literal["proposed", "approved", "rejected", "expired", "cancelled", "executing", "executed", "failed"]


class ProposeIn(BaseModel):
    target: Annotated[str, Field(min_length=1, max_length=40)]
    operation: Annotated[str, Field(min_length=1, max_length=80)]
    payload: dict[str, Any] = Field(default_factory=dict)


class DecisionIn(BaseModel):
    reason: Annotated[str | None, Field(max_length=2000)] = None


class OperationOut(BaseModel):
    target: str
    operation: str
    title: str
    min_role: str
    payload_schema: dict[str, Any]


class OperationsSettingsIn(BaseModel):
    """Timings and webhooks only: the approvers notified in turn are the users holding the approver permission
    (granted with PATCH /v1/admin/users/{id}), never a list typed in here."""

    model_config = ConfigDict(extra="forbid")
    escalate_after_minutes: Annotated[float | None, Field(gt=0, le=7 * 24 * 60)] = None
    expiry_hours: Annotated[float | None, Field(gt=0, le=24 * 30)] = None
    webhooks: list[AnyHttpUrl] = Field(default_factory=list, max_length=10,
                                       description="posted to at every escalation (next to the approver's e-mail)")


@router.get("/operations/catalog", response_model=list[OperationOut])
def catalog(_principal: PrincipalDep) -> list[OperationOut]:
    """The operations that can be proposed, per target system, with their payload schema."""
    return [OperationOut(target=s.target, operation=s.name, title=s.title, min_role=s.min_role,
                         payload_schema=s.payload.model_json_schema()) for s in targets.REGISTRY.values()]


@router.post("/operations", response_model=ProposalView, status_code=status.HTTP_201_CREATED)
def propose(body: ProposeIn, principal: PrincipalDep, db: TenantSessionDep) -> ProposalView:
    """Propose a write (nothing is written until a different person with the approver permission approves it)."""
    return proposals.propose(db, tenant_id=principal.tenant_id, actor=principal.subject,
                             actor_role=principal.role.value, target=body.target, operation=body.operation,
                             payload=body.payload, source="api")


@router.get("/operations", response_model=list[ProposalView])
def list_operations(db: TenantSessionDep, status_: Annotated[Status | None, Query(alias="status")] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[ProposalView]:
    return proposals.list_proposals(db, status_, limit)


@router.get("/operations/{proposal_id}", response_model=ProposalView)
def get_operation(proposal_id: uuid.UUID, db: TenantSessionDep) -> ProposalView:
    return proposals.get(db, proposal_id)


@router.post("/operations/{proposal_id}/approve", response_model=ProposalView)
def approve(proposal_id: uuid.UUID, body: DecisionIn, principal: PrincipalDep, db: TenantSessionDep) -> ProposalView:
    """Approve (approver permission; not your own proposal). High-risk operations need two approvers."""
    return proposals.approve(db, principal, proposal_id, body.reason)


@router.post("/operations/{proposal_id}/reject", response_model=ProposalView)
def reject(proposal_id: uuid.UUID, body: DecisionIn, principal: PrincipalDep, db: TenantSessionDep) -> ProposalView:
    return proposals.reject(db, principal, proposal_id, body.reason)


@router.post("/operations/{proposal_id}/cancel", response_model=ProposalView)
def cancel(proposal_id: uuid.UUID, body: DecisionIn, principal: PrincipalDep, db: TenantSessionDep) -> ProposalView:
    """Withdraw a proposal that has not started executing (the proposer, or an admin)."""
    return proposals.cancel(db, principal, proposal_id, body.reason)


@router.get("/operations-settings", dependencies=[require_role(Role.admin)])
def get_settings_(principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    pol = proposals.policy(db, principal.tenant_id)
    return {"escalate_after_minutes": pol.escalate_after.total_seconds() / 60,
            "expiry_hours": pol.expiry.total_seconds() / 3600, "webhooks": pol.webhooks,
            "approvers": [{"username": a.username, "email": a.email, "display_name": a.display_name}
                          for a in proposals.approvers(db)]}


@router.put("/operations-settings", dependencies=[require_role(Role.admin)])
async def put_settings(body: OperationsSettingsIn, principal: PrincipalDep) -> dict[str, Any]:
    """The escalation timings and webhooks of this tenant's write proposals (audited)."""
    cfg = body.model_dump(mode="json", exclude_none=True)
    return await run_in_threadpool(proposals.set_policy, principal.tenant_id, cfg, actor=principal.subject,
                                   actor_role=principal.role.value)
