"""What the platform remembers about you: list, add, forget (one or all). Deletions are real and audited."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from agents import memory
from agents.learning.extraction import extract_rules
from compliance import audit, holds
from core.models import Memory
from retrieval.search import Caller
from serving.deps import EmbedderDep, PrincipalDep, SettingsDep, TenantSessionDep

router = APIRouter(prefix="/v1/memories", tags=["memories"])

MemoryType = Literal["FACT", "PREFERENCE", "SKILL", "CONTEXT", "EPISODIC"]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class MemoryOut(BaseModel):
    id: uuid.UUID
    type: MemoryType
    key: str | None
    content: str
    importance: float
    access_count: int
    merged_count: int
    classification: int
    origin: str
    message_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime
    last_accessed_at: dt.datetime | None


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    total: int
    limit: int
    offset: int
    withheld: int = Field(description="memories derived from documents you can no longer read (not shown; "
                                      "DELETE /v1/memories removes them too)")


class MemoryIn(BaseModel):
    type: Literal["FACT", "PREFERENCE", "SKILL", "CONTEXT"]
    content: Annotated[str, Field(min_length=1, max_length=memory.MAX_CONTENT, pattern=NO_NUL)]


class ForgetOut(BaseModel):
    memories: int
    lessons: int
    type: MemoryType | None


def _out(m: Memory) -> MemoryOut:
    return MemoryOut(id=m.id, type=cast(MemoryType, m.memory_type), key=m.key, content=m.content,
                     importance=round(m.importance, 4), access_count=m.access_count, merged_count=m.merged_count,
                     classification=m.classification, origin=m.origin, message_id=m.message_id,
                     created_at=m.created_at, updated_at=m.updated_at, last_accessed_at=m.last_accessed_at)


@router.get("", response_model=MemoryPage)
def list_memories(principal: PrincipalDep, db: TenantSessionDep,
                  type: MemoryType | None = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> MemoryPage:
    """Your memories, newest first (filter by type), only those you may still read."""
    rows, total, withheld = memory.list_memories(db, principal.subject, Caller(principal.role.value, principal.groups),
                                                 type, limit, offset)
    return MemoryPage(items=[_out(m) for m in rows], total=total, limit=limit, offset=offset, withheld=withheld)


@router.post("", response_model=MemoryOut, status_code=status.HTTP_201_CREATED)
def add_memory(body: MemoryIn, principal: PrincipalDep, db: TenantSessionDep, settings: SettingsDep,
               embedder: EmbedderDep) -> MemoryOut:
    """Tell the platform something to remember. A preference it recognises ("short answers", "bullet
    points", "answer in German", "metric units") is stored under its key and replaces the earlier value."""
    known = [i for i in extract_rules(body.content) if i.type == "PREFERENCE"] \
        if body.type == "PREFERENCE" else []
    key, value = (known[0].key, known[0].value) if known else (None, None)
    w = memory.remember(db, principal.tenant_id, principal.subject, body.type,
                        known[0].content if known else body.content, key=key, origin="user",
                        metadata={"value": value} if value else {}, settings=settings, embedder=embedder)
    audit.record(db, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="memory.create", resource_type="memory", resource_id=str(w.memory.id),
                 details={"type": body.type, "key": key, "action": w.action})
    return _out(w.memory)


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_memory(memory_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> Response:
    """Forget one of your memories (deleted, not hidden; 409 `held` under a destruction hold)."""
    holds.ensure_not_held(db, principal.tenant_id, what="this memory", user=principal.subject)
    memory.delete_memory(db, principal.tenant_id, principal.subject, principal.role.value, memory_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("", response_model=ForgetOut)
def forget_all(principal: PrincipalDep, db: TenantSessionDep,
               type: MemoryType | None = None) -> ForgetOut:
    """Forget everything remembered about you (or one type of it). Without a type, the agent's lessons about
    your past answers go too. Goals are managed separately (PATCH /v1/goals/{id})."""
    holds.ensure_not_held(db, principal.tenant_id, what="your memories", user=principal.subject)
    return ForgetOut(**memory.forget_all(db, principal.tenant_id, principal.subject, principal.role.value, type))
