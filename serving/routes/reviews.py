"""Approval tokens for the jobs that release or export data (see compliance/approvals.py).

The Dagster UI has no login, so a steward's decision and a dataset export are authorised here, by an
authenticated user, and the Dagster run only accepts them with the single-use token this returns.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from compliance import approvals
from compliance.access import can_read
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.models import DocumentStatus, ReviewStatus, Role
from core.repos import documents
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1", tags=["approvals"])


class Decision(enum.StrEnum):
    approve = "approve"
    reject = "reject"


class ClassName(enum.StrEnum):
    I = "I"  # noqa: E741 - the class's name
    II = "II"
    III = "III"
    IV = "IV"


class ReviewTokenIn(BaseModel):
    decision: Decision
    reason: str = Field(min_length=1, max_length=2000, description="why (recorded in the audit log)")
    classification: ClassName | None = Field(
        default=None, description="approve at this lower class: corrects a detector's raise (e.g. a public manual "
        "raised for its example addresses); not below the uploader's declared class")


class ExportTokenIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why the dataset is exported (audited)")


class ApprovalTokenOut(BaseModel):
    approval_token: str
    expires_at: dt.datetime
    job: str
    partition: str | None = None
    run_config: dict = Field(description="paste into the job's Launchpad (YAML or JSON)")


@router.post("/documents/{document_id}/review-token", response_model=ApprovalTokenOut,
             status_code=status.HTTP_201_CREATED)
def review_token(document_id: uuid.UUID, body: ReviewTokenIn, principal: PrincipalDep,
                 db: TenantSessionDep) -> ApprovalTokenOut:
    """A single-use, 15-minute approval for ONE version of a Class III/IV document awaiting review, for a
    data steward (admin, or "steward" in the token's roles claim) who may read it and did not upload it.
    Launch Dagster job `steward_review` for the document's partition with the returned run config."""
    if not principal.steward:
        raise Forbidden("this action needs the data-steward permission", code="steward_required")
    reason = body.reason.replace("\x00", "").strip()
    doc = documents.get(db, document_id)
    # The steward reads what they approve: the need-to-know rules apply (the approval itself is what
    # is being decided, so Class IV is checked as if approved).
    if doc is None or not can_read(principal.role.value, principal.groups, doc.classification, doc.acl_groups,
                                   ReviewStatus.approved):
        raise NotFound("document not found", code="document_not_found")
    if doc.created_by is not None and doc.created_by == principal.subject:
        raise Forbidden("the uploader cannot review their own document", code="own_document")
    if doc.status != DocumentStatus.awaiting_approval:
        raise Conflict(f"document is {doc.status}, not awaiting approval", code="not_awaiting")
    if not reason:
        raise InvalidInput("a reason is required", code="reason_required")
    lower_to = _CLASS_NUMBER[body.classification] if body.classification is not None else None
    if lower_to is not None and (body.decision != Decision.approve
                                 or not doc.declared_classification <= lower_to < doc.classification):
        raise InvalidInput(f"a class can be lowered only when approving, below the detected class "
                           f"({doc.classification}) and not below the declared class ({doc.declared_classification})",
                           code="invalid_class")
    token, approval = approvals.issue(
        db, kind=approvals.REVIEW, tenant_id=principal.tenant_id, subject=principal.subject,
        subject_role=principal.role.value, reason=reason, document_id=doc.id, content_hash=doc.content_hash,
        decision=body.decision.value, classification=lower_to)
    config = {"decision": body.decision.value, "reason": reason, "approval_token": token}
    if body.classification is not None:
        config["classification"] = body.classification.value
    return ApprovalTokenOut(
        approval_token=token, expires_at=approval.expires_at, job="steward_review", partition=str(doc.id),
        run_config={"ops": {"search_index": {"config": config}}})


_CLASS_NUMBER = {ClassName.I: 1, ClassName.II: 2, ClassName.III: 3, ClassName.IV: 4}


@router.post("/finetune/export-token", response_model=ApprovalTokenOut, status_code=status.HTTP_201_CREATED,
             dependencies=[require_role(Role.admin)])
def export_token(body: ExportTokenIn, principal: PrincipalDep, db: TenantSessionDep) -> ApprovalTokenOut:
    """A single-use, 15-minute approval for one run of Dagster job `export_finetune_dataset`, limited to
    this tenant's data."""
    reason = body.reason.replace("\x00", "").strip()
    if not reason:
        raise InvalidInput("a reason is required", code="reason_required")
    token, approval = approvals.issue(db, kind=approvals.EXPORT, tenant_id=principal.tenant_id,
                                      subject=principal.subject, subject_role=principal.role.value, reason=reason)
    return ApprovalTokenOut(
        approval_token=token, expires_at=approval.expires_at, job="export_finetune_dataset",
        run_config={"ops": {"finetune_dataset": {"config": {"reason": reason, "approval_token": token}}}})

