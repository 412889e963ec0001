"""Token use: one UsageRecord per model call (written by agents.budget)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import UsageRecord

GroupBy = Literal["user", "agent", "tier", "model"]
_COLUMNS = {"user": UsageRecord.user_subject, "agent": UsageRecord.agent, "tier": UsageRecord.tier,
            "model": UsageRecord.model}


def summary(session: Session, group_by: GroupBy, since: dt.datetime,
            subject: str | None = None) -> list[tuple[str, int, int, int, float]]:
    """(key, calls, prompt tokens, completion tokens, cost) per group since a time, ordered by key; only one
    user's calls when `subject` is given."""
    col = _COLUMNS[group_by]
    q = (select(col, func.count(), func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.cost)).where(UsageRecord.created_at >= since).group_by(col).order_by(col))
    if subject is not None:
        q = q.where(UsageRecord.user_subject == subject)
    return [(k, n, int(p), int(c), float(cost)) for k, n, p, c, cost in session.execute(q).all()]
