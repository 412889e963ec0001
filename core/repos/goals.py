"""Goal plans and the agent runs of their steps (goals themselves: agents.goals)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from core.models import AgentRun, GoalPlan


def plans(session: Session, goal_id: uuid.UUID, *, visible: ColumnElement[bool] | None = None,
          limit: int = 50) -> list[GoalPlan]:
    """A goal's plans, newest first; `visible` narrows them to what the caller may see."""
    q = select(GoalPlan).where(GoalPlan.goal_id == goal_id)
    if visible is not None:
        q = q.where(visible)
    return list(session.execute(q.order_by(GoalPlan.created_at.desc()).limit(limit)).scalars())


def run_labels(session: Session,
               run_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, dict[str, Any] | None, list[Any]]]:
    """(id, stored access label, trace) of agent runs."""
    if not run_ids:
        return []
    return [tuple(r) for r in session.execute(
        select(AgentRun.id, AgentRun.access, AgentRun.trace).where(AgentRun.id.in_(list(run_ids)))).all()]
