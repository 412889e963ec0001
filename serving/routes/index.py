from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from core.models import Role
from retrieval.builds import versions
from serving.deps import PrincipalDep, require_role

router = APIRouter(prefix="/v1/index", tags=["index"])


class IndexVersionOut(BaseModel):
    version: int
    status: str  # active | candidate | building | retired | rejected | failed | superseded
    kind: str  # initial | rebuild | boosts
    reason: str
    generation: int
    config: dict
    stats: dict
    evaluation: dict
    error: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


@router.get("/versions", response_model=list[IndexVersionOut], dependencies=[require_role(Role.admin)])
async def list_versions(principal: PrincipalDep,
                        limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[IndexVersionOut]:
    """Your tenant's search-index versions, newest first: which one serves, what each was built with,
    and the golden-evaluation verdict that promoted or rejected it (Dagster jobs rebuild_search_index
    and refresh_source_boosts create them)."""
    rows = await run_in_threadpool(versions, principal.tenant_id, limit)
    return [IndexVersionOut(**r) for r in rows]
