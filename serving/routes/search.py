from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from compliance import audit
from compliance.classification import CLASS_NAMES
from retrieval.search import Caller, Filters, search
from serving.deps import PrincipalDep, TenantSessionDep
from serving.ratelimit import RateLimit

router = APIRouter(prefix="/v1/search", tags=["search"])


class FiltersIn(BaseModel):
    document_ids: list[uuid.UUID] | None = Field(default=None, max_length=200)
    formats: list[Literal["txt", "md", "html", "docx", "pdf", "image"]] | None = None
    section: Annotated[str | None, Field(max_length=200)] = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None


class SearchIn(BaseModel):
    query: Annotated[str, Field(min_length=1, max_length=2000)]
    k: Annotated[int, Field(ge=1, le=50)] = 8
    filters: FiltersIn = Field(default_factory=FiltersIn)


class PassageFields(BaseModel):
    """An indexed passage as the API shows it (a search hit, a citation opened with GET /v1/passages/{id})."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    text: str
    page: int | None
    section: str | None
    classification: str  # I | II | III | IV


class HitOut(PassageFields):
    score: float
    dense_rank: int | None
    lexical_rank: int | None
    rerank_score: float | None


class SearchOut(BaseModel):
    hits: list[HitOut]
    fusion: str
    reranker: str | None
    notes: list[str]


def run_search(s: TenantSessionDep, principal: PrincipalDep, body: SearchIn) -> SearchOut:
    f = body.filters
    filters = Filters(document_ids=f.document_ids, formats=f.formats, section=f.section,
                      created_after=f.created_after, created_before=f.created_before)
    res = search(s, Caller(principal.role.value, principal.groups), body.query.strip(), body.k, filters)
    qhash = hashlib.sha256(body.query.encode()).hexdigest()
    audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="search", resource_type="search",
                 details={"query_sha256": qhash, "k": body.k, "chunk_ids": [str(h.chunk_id) for h in res.hits]})
    for h in res.hits:
        if h.classification >= 3:  # Class III/IV: every access is its own audit record
            audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject,
                         actor_role=principal.role.value, action="chunk.access", resource_type="chunk",
                         resource_id=str(h.chunk_id),
                         details={"document_id": str(h.document_id), "class": CLASS_NAMES[h.classification],
                                  "via": "search", "query_sha256": qhash})
    return SearchOut(
        hits=[HitOut(chunk_id=h.chunk_id, document_id=h.document_id, title=h.title, text=h.text, page=h.page,
                     section=h.section, classification=CLASS_NAMES[h.classification], score=h.score,
                     dense_rank=h.dense_rank, lexical_rank=h.lexical_rank, rerank_score=h.rerank_score)
              for h in res.hits],
        fusion=res.fusion, reranker=res.reranker, notes=res.notes,
    )


@router.post("", response_model=SearchOut, dependencies=[RateLimit])
async def post_search(body: SearchIn, principal: PrincipalDep, db: TenantSessionDep) -> SearchOut:
    """Hybrid search over the chunks the caller may read, ranked by reciprocal-rank fusion."""
    return await run_in_threadpool(run_search, db, principal, body)
