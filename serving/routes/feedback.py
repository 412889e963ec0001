from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from evals.feedback import submit
from serving.deps import PrincipalDep

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


class FeedbackIn(BaseModel):
    message_id: uuid.UUID
    rating: Literal["up", "down"] | Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str | None, Field(max_length=2000)] = None


class FeedbackOut(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    rating: str
    value: float


@router.post("", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED)
async def post_feedback(body: FeedbackIn, principal: PrincipalDep) -> FeedbackOut:
    """Thumbs up/down or a 1–5 rating on one of your answers (a second vote replaces the first). It is
    stored with the answer's cited chunks; the `source_boosts` Dagster asset turns it into retrieval boosts."""
    fb = await run_in_threadpool(submit, principal.tenant_id, principal.subject, principal.role.value,
                                 body.message_id, body.rating, body.comment)
    return FeedbackOut(id=fb.id, message_id=fb.message_id, rating=fb.rating, value=fb.value)
