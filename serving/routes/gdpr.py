"""GDPR requests: a data subject asks for access, erasure or portability of their own data; a compliance officer
may ask on someone's behalf. Requests are persisted (received → processing → completed | refused | failed, due
30 days after receipt) and processed by the Dagster job `process_gdpr_requests` (compliance/gdpr.py).

A subject sees their own requests and downloads their own exports; a compliance officer sees the tenant's. Someone
else's request is a 404, as if it did not exist (and an audited denial).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from compliance import gdpr
from core.enums import Permission
from core.errors import Forbidden, NotFound
from core.security import Principal
from serving.deps import PrincipalDep, TenantSessionDep

router = APIRouter(prefix="/v1/gdpr", tags=["gdpr"])


class RequestIn(BaseModel):
    kind: gdpr.RequestKind
    subject: Annotated[str | None, Field(min_length=1, max_length=300,
                                         description="whose data; omitted: your own (another person's needs the "
                                                     "compliance_officer permission)")] = None
    reason: Annotated[str | None, Field(max_length=2000)] = None


class RequestOut(BaseModel):
    id: uuid.UUID
    subject: str
    kind: str
    status: str
    requested_by: str
    on_behalf: bool
    received_at: dt.datetime
    due_at: dt.datetime
    overdue: bool
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    result: dict[str, Any]
    exports: list[str]


def _out(req: gdpr.GdprRequest) -> RequestOut:
    files = req.result.get("files") if req.export_dir else None
    return RequestOut(id=req.id, subject=req.subject, kind=req.kind, status=req.status, requested_by=req.requested_by,
                      on_behalf=req.on_behalf, received_at=req.received_at, due_at=req.due_at, overdue=req.overdue,
                      started_at=req.started_at, completed_at=req.completed_at, result=req.result,
                      exports=[f.removeprefix("export.") for f in files] if isinstance(files, list) else [])


def _officer(principal: Principal) -> bool:
    return principal.has(Permission.compliance_officer)


def _visible(db: Any, principal: Principal, request_id: uuid.UUID) -> gdpr.GdprRequest:
    req = gdpr.get(db, request_id)
    if not _officer(principal) and req.subject != principal.subject:
        raise NotFound("no such GDPR request", code="gdpr_request_not_found")
    return req


@router.post("/requests", response_model=RequestOut, status_code=status.HTTP_201_CREATED)
def create_request(body: RequestIn, principal: PrincipalDep, db: TenantSessionDep) -> RequestOut:
    """Ask for access to, erasure of, or a portable copy of personal data (yours, or — as a compliance officer —
    someone else's). Fulfilled by the pipeline within the 30-day deadline."""
    subject = body.subject or principal.subject
    if subject != principal.subject and not _officer(principal):
        raise Forbidden("only a compliance officer may make a request on someone else's behalf",
                        code="compliance_officer_required")
    return _out(gdpr.submit(db, principal.tenant_id, kind=body.kind, subject=subject, requested_by=principal.subject,
                            requested_by_role=principal.role.value, reason=body.reason))


@router.get("/requests", response_model=list[RequestOut])
def list_requests(principal: PrincipalDep, db: TenantSessionDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[RequestOut]:
    """Your requests (a compliance officer: every request of the tenant), newest first."""
    subject = None if _officer(principal) else principal.subject
    return [_out(r) for r in gdpr.list_requests(db, principal.tenant_id, subject=subject, limit=limit)]


@router.get("/requests/{request_id}", response_model=RequestOut)
def get_request(request_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> RequestOut:
    return _out(_visible(db, principal, request_id))


@router.get("/requests/{request_id}/export", response_class=FileResponse,
            responses={200: {"content": {"application/json": {}, "text/html": {}}}})
def download_export(request_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep,
                    format: Annotated[Literal["json", "html"], Query()] = "json") -> FileResponse:
    """The export of a completed access (HTML or JSON) or portability (JSON) request."""
    req = _visible(db, principal, request_id)
    if req.kind == gdpr.RequestKind.erasure:
        raise NotFound("an erasure has no export", code="export_not_found")
    path = gdpr.export_file(req, format)
    return FileResponse(path, media_type="application/json" if format == "json" else "text/html",
                        filename=f"gdpr-{req.kind}-{req.id}.{format}")
