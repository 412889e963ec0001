from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from compliance.access import can_read, read_filter
from compliance.classification import CLASS_NAMES
from core.errors import NotFound
from core.models import Document, DocumentStatus, Role
from core.repos import documents
from core.security import Principal
from core.settings import get_settings
from ingestion import submission
from ingestion.filestore import FileTooLarge
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1/documents", tags=["documents"])
# Multipart framing around the file: allow this much on top of the file-size limit.
_MULTIPART_OVERHEAD = 64 * 1024
_STATUS = "^(" + "|".join(DocumentStatus) + ")$"


class SubmitOut(BaseModel):
    document_id: uuid.UUID
    status: str
    unchanged: bool
    content_hash: str
    retried: bool = False  # a failed or stuck document with this content was queued again


class ReviewOut(BaseModel):
    status: str | None
    reviewed_by: str | None
    reviewed_at: dt.datetime | None
    reason: str | None


class DocumentOut(BaseModel):
    id: uuid.UUID
    title: str
    filename: str
    mime_type: str | None
    size_bytes: int
    content_hash: str
    source: str
    status: str
    status_reason: str | None
    classification: str
    declared_classification: str
    classification_reasons: list
    acl_groups: list[str]
    chunk_count: int
    index_version: int | None
    review: ReviewOut
    created_at: dt.datetime
    updated_at: dt.datetime


class DocumentList(BaseModel):
    items: list[DocumentOut]
    total: int


def _out(d: Document) -> DocumentOut:
    return DocumentOut(
        id=d.id, title=d.title, filename=d.filename, mime_type=d.mime_type, size_bytes=d.size_bytes,
        content_hash=d.content_hash, source=d.source, status=d.status, status_reason=d.status_reason,
        classification=CLASS_NAMES[d.classification], declared_classification=CLASS_NAMES[d.declared_classification],
        classification_reasons=d.classification_reasons, acl_groups=list(d.acl_groups), chunk_count=d.chunk_count,
        index_version=d.index_version,
        review=ReviewOut(status=d.review_status, reviewed_by=d.reviewed_by, reviewed_at=d.reviewed_at,
                         reason=d.review_reason),
        created_at=d.created_at, updated_at=d.updated_at,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=SubmitOut,
             dependencies=[require_role(Role.operator)],
             responses={200: {"model": SubmitOut, "description": "unchanged re-upload: nothing to do"}})
async def upload(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="the document (txt, md, html, docx, pdf, png, jpg, tiff)")],
    classification: Annotated[str, Form(description="I | II | III | IV")] = "II",
    acl_groups: Annotated[str | None, Form(description="comma-separated need-to-know groups")] = None,
    title: Annotated[str | None, Form()] = None,
) -> SubmitOut:
    """Store the original and queue it for the ingestion pipeline (Dagster). The same file name replaces a
    document you may read (never lowering its class or dropping its ACL groups); a name taken by a document
    you may not read gives a separate document, answered exactly like a first upload."""
    limit = get_settings().max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + _MULTIPART_OVERHEAD:
        raise FileTooLarge(f"upload exceeds the limit of {limit} bytes", details={"limit_bytes": limit})
    sub = await run_in_threadpool(
        submission.submit_document, principal.tenant_id, filename=file.filename or "", stream=file.file,
        classification=classification, acl_groups=acl_groups, title=title, actor=principal.subject,
        actor_role=principal.role.value, actor_groups=principal.groups,
    )
    if sub.unchanged:
        response.status_code = status.HTTP_200_OK
    return SubmitOut(document_id=sub.document_id, status=sub.status, unchanged=sub.unchanged,
                     content_hash=sub.content_hash, retried=sub.retried)


@router.get("", response_model=DocumentList)
def list_documents(
    principal: PrincipalDep,
    db: TenantSessionDep,
    status_filter: Annotated[str | None, Query(alias="status", pattern=_STATUS)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentList:
    """Documents the caller may see (admins see every document's metadata)."""
    visible = None if principal.role == Role.admin else read_filter(
        principal.role.value, principal.groups, Document.classification, Document.acl_groups, Document.review_status)
    rows, total = documents.page(db, visible=visible, status=status_filter, limit=limit, offset=offset)
    return DocumentList(items=[_out(d) for d in rows], total=total)


def _get_visible(db: TenantSessionDep, principal: Principal, document_id: uuid.UUID) -> Document:
    d = documents.get(db, document_id)
    if d is None or (principal.role != Role.admin and not can_read(
            principal.role.value, principal.groups, d.classification, d.acl_groups, d.review_status)):
        # Same answer for "absent" and "not yours": existence is not disclosed.
        raise NotFound("document not found", code="document_not_found")
    return d


@router.get("/{document_id}", response_model=DocumentOut)
def get_document(document_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> DocumentOut:
    return _out(_get_visible(db, principal, document_id))


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[require_role(Role.operator)])
def delete_document(document_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> Response:
    """Remove the document, its chunks, its stage files and (unless another document has the same content)
    its original from the file store (audited)."""
    _get_visible(db, principal, document_id)
    submission.delete_document(principal.tenant_id, document_id, actor=principal.subject,
                              actor_role=principal.role.value)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
