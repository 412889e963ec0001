"""Compliance officer's API: the dashboard, SOC 2 evidence exports, and the data steward's escalation channels.

Dashboard and exports are for tenant admins and holders of the `compliance_officer` permission; the
escalation channels (who hears about overdue steward reviews) are set by a tenant admin. Denials are audited
by the error handlers (`access.denied`), exports by compliance/soc2.py (`compliance.soc2.exported`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import AnyHttpUrl, BaseModel, Field

from compliance import dashboard, soc2
from core.enums import Permission
from core.errors import Forbidden
from core.models import Role
from core.security import Principal
from core.settings import get_settings
from identity.tenancy import set_tenant_setting
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])


def _officer(principal: PrincipalDep) -> Principal:
    if principal.role != Role.admin and not principal.has(Permission.compliance_officer):
        raise Forbidden("this needs the admin role or the compliance_officer permission",
                        code="compliance_officer_required")
    return principal


OfficerDep = Annotated[Principal, Depends(_officer)]


class DashboardOut(BaseModel):
    generated_at: dt.datetime
    period_days: int
    documents_by_class: dict[str, dict[str, int]] = Field(description="per class (I–IV): total and per status")
    pending_approvals: dict[str, Any] = Field(description="count, oldest_hours, over_24h, oldest (up to 10)")
    pii: dict[str, Any] = Field(description="documents with personal data found by the classifier, findings by type")
    ai_usage_by_tier: dict[str, dict[str, float]] = Field(description="calls, tokens and cost per tier in the period")
    export_control: dict[str, int] = Field(description="export-control guard decisions on answers in the period")
    refused_requests: dict[str, Any] = Field(description="audit records whose outcome is not success, by action")
    holds: dict[str, Any] = Field(description="active destruction holds by scope")
    gdpr_requests: dict[str, Any] = Field(description="open GDPR requests by kind, and how many are overdue")


@router.get("/dashboard", response_model=DashboardOut)
def get_dashboard(_: OfficerDep, db: TenantSessionDep,
                  days: Annotated[int, Query(ge=1, le=366, description="period for usage and refusals")] = 30,
                  ) -> DashboardOut:
    """Counts by class, pending steward approvals and their age, PII detections, AI usage by tier, export-control
    decisions, refused requests, destruction holds and open GDPR requests for the caller's tenant."""
    return DashboardOut(**dashboard.build(db, days=days))


class SOC2ExportIn(BaseModel):
    since: dt.datetime | None = Field(default=None, description="start of the period (default: 90 days ago)")
    until: dt.datetime | None = Field(default=None, description="end of the period (default: now)")


class SOC2ExportOut(BaseModel):
    id: uuid.UUID
    sha256: str = Field(description="SHA-256 of the zip")
    manifest_sha256: str = Field(description="SHA-256 of manifest.json (also in the audit trail)")
    manifest: dict[str, Any]
    download: str


def _exports_dir() -> Any:
    return get_settings().home / "exports" / "soc2"


@router.post("/soc2-exports", response_model=SOC2ExportOut, status_code=status.HTTP_201_CREATED)
def create_soc2_export(body: SOC2ExportIn, principal: OfficerDep, db: TenantSessionDep) -> SOC2ExportOut:
    """Build a SOC 2 evidence zip for the period: access review, changes, approvals, audit verification,
    incidents and AI usage, with a manifest of SHA-256 hashes."""
    now = dt.datetime.now(dt.UTC)
    until = body.until or now
    since = body.since or until - dt.timedelta(days=90)
    s = get_settings()
    models = {"llm_model": s.llm_model or "extractive (built-in)", "llm_model_light": s.llm_model_light,
              "llm_model_standard": s.llm_model_standard, "llm_model_heavy": s.llm_model_heavy,
              "embedding_model": s.embedding_model}
    export = soc2.build(db, tenant_id=principal.tenant_id, tenant=principal.tenant, actor=principal.subject,
                        actor_role=principal.role.value, since=since, until=until, out_dir=_exports_dir(),
                        model_config=models)
    return SOC2ExportOut(id=export.id, sha256=export.sha256, manifest_sha256=export.manifest_sha256,
                         manifest=export.manifest, download=f"/v1/compliance/soc2-exports/{export.id}")


@router.get("/soc2-exports/{export_id}", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the evidence zip"}})
async def download_soc2_export(export_id: uuid.UUID, principal: OfficerDep) -> FileResponse:
    """The zip of an earlier export of the caller's tenant."""
    path = await run_in_threadpool(soc2.find, _exports_dir(), principal.tenant_id, export_id)
    return FileResponse(path, media_type="application/zip", filename=f"soc2-evidence-{export_id}.zip")


Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class StewardEscalationIn(BaseModel):
    escalate_after_hours: float = Field(gt=0, le=24 * 90, description="pending reviews older than this escalate")
    webhooks: list[AnyHttpUrl] = Field(default_factory=list, max_length=10)
    emails: list[Email] = Field(default_factory=list, max_length=50)


@router.put("/steward-escalation", response_model=StewardEscalationIn, dependencies=[require_role(Role.admin)])
def set_steward_escalation(body: StewardEscalationIn, principal: PrincipalDep) -> StewardEscalationIn:
    """Who hears about Class III/IV documents that have waited too long for a data steward (the Dagster
    review_queue asset escalates each document version once)."""
    value = {"escalate_after_hours": body.escalate_after_hours, "webhooks": [str(u) for u in body.webhooks],
             "emails": list(body.emails)}
    set_tenant_setting(principal.tenant_id, "steward", value, actor=principal.subject,
                       actor_role=principal.role.value)
    return body
