"""Token use: one UsageRecord per model call (written by agents.budget)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.models import UsageRecord

GroupBy = Literal["user", "agent", "tier", "model"]
_COLUMNS = {"user": UsageRecord.user_subject, "agent": UsageRecord.agent, "tier": UsageRecord.tier,
            "model": UsageRecord.model}


def _filters(since: dt.datetime, subject: str | None, until: dt.datetime | None,
             agent: str | None) -> list[ColumnElement[bool]]:
    conds = [UsageRecord.created_at >= since]
    if until is not None:
        conds.append(UsageRecord.created_at < until)
    if subject is not None:
        conds.append(UsageRecord.user_subject == subject)
    if agent is not None:
        conds.append(UsageRecord.agent == agent)
    return conds


def summary(session: Session, group_by: GroupBy, since: dt.datetime,
            subject: str | None = None, *, until: dt.datetime | None = None,
            agent: str | None = None) -> list[tuple[str, int, int, int, float]]:
    """(key, calls, prompt tokens, completion tokens, cost) per group in [since, until), ordered by key; only
    one user's (`subject`) or one specialist's (`agent`) calls when given."""
    col = _COLUMNS[group_by]
    q = (select(col, func.count(), func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.cost)).where(*_filters(since, subject, until, agent)).group_by(col).order_by(col))
    return [(k, n, int(p), int(c), float(cost)) for k, n, p, c, cost in session.execute(q).all()]


def daily(session: Session, since: dt.datetime, subject: str | None = None, *, until: dt.datetime | None = None,
          agent: str | None = None) -> list[tuple[dt.date, int, int, int, float]]:
    """(UTC day, calls, prompt tokens, completion tokens, cost) per day with use in [since, until), oldest first."""
    day = func.date_trunc("day", func.timezone("UTC", UsageRecord.created_at))
    q = (select(day, func.count(), func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.cost)).where(*_filters(since, subject, until, agent)).group_by(day).order_by(day))
    return [(d.date(), n, int(p), int(c), float(cost)) for d, n, p, c, cost in session.execute(q).all()]
