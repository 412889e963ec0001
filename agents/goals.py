"""Persistent user goals: text, status (active | done | abandoned), progress notes, timestamps.

Active goals are recalled at the start of every turn (OBSERVE) with their similarity to the message; a
turn whose message relates to a goal (cosine ≥ RELATED) appends a progress note at its end (LEARN). A goal
can be created through the API or stated in conversation ("my goal is to reduce scrap on line 2 below
2 %"). Every change is audited; another user's goal is indistinguishable from a missing one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance import audit
from core.embedding import Embedder
from core.errors import Conflict, InvalidInput, NotFound
from core.models import UserGoal
from core.settings import Settings

STATUSES = ("active", "done", "abandoned")
MIN_TEXT, MAX_TEXT = 3, 500
MAX_NOTE = 500
MAX_NOTES = 100  # oldest notes roll off: a goal's progress log stays readable and bounded
RELATED = 0.4  # cosine similarity of message and goal above which a turn counts as work on the goal
DUPLICATE = 0.9  # a goal stated again in conversation is the same goal


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _text(value: str) -> str:
    value = " ".join((value or "").split())
    if not MIN_TEXT <= len(value) <= MAX_TEXT:
        raise InvalidInput(f"goal text must be {MIN_TEXT}..{MAX_TEXT} characters", code="invalid_goal_text",
                           details={"length": len(value)})
    return value


def as_dict(g: UserGoal) -> dict[str, Any]:
    return {"id": g.id, "text": g.text, "status": g.status, "progress": g.progress, "origin": g.origin,
            "created_at": g.created_at, "updated_at": g.updated_at, "closed_at": g.closed_at}


def _active_count(session: Session, subject: str) -> int:
    return int(session.execute(select(func.count()).select_from(UserGoal).where(
        UserGoal.user_subject == subject, UserGoal.status == "active")).scalar() or 0)


def _note(goal: UserGoal, note: str, now: dt.datetime, **extra: object) -> None:
    entry = {"at": now.isoformat(), "note": " ".join(note.split())[:MAX_NOTE],
             **{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in extra.items() if v is not None}}
    goal.progress = [*goal.progress, entry][-MAX_NOTES:]
    goal.updated_at = now


@dataclass
class Created:
    goal: UserGoal
    created: bool  # False: the same goal was already active


def create(session: Session, tenant_id: uuid.UUID, subject: str, role: str, text: str, *, origin: str = "api",
           vector: np.ndarray | None = None, conversation_id: uuid.UUID | None = None, settings: Settings,
           embedder: Embedder) -> Created:
    text = _text(text)
    vec = vector if vector is not None else embedder.embed([text])[0]
    if origin == "conversation":
        for goal, sim in active_goals(session, subject, vec):
            if sim >= DUPLICATE:
                return Created(goal, False)
    limit = settings.goals_max_active
    if _active_count(session, subject) >= limit:
        raise Conflict(f"you already have {limit} active goals: mark one done or abandoned first",
                       code="goal_limit_reached", details={"limit": limit})
    now = _now()
    goal = UserGoal(id=uuid.uuid4(), tenant_id=tenant_id, user_subject=subject, text=text, status="active",
                    progress=[], embedding=[float(x) for x in vec], embedding_dim=int(vec.shape[0]), origin=origin,
                    created_at=now, updated_at=now)
    _note(goal, "goal set in conversation" if origin == "conversation" else "goal created", now,
          conversation_id=conversation_id)
    session.add(goal)
    session.flush()
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=role, action="goal.create",
                 resource_type="goal", resource_id=str(goal.id), details={"origin": origin})
    return Created(goal, True)


def get(session: Session, subject: str, goal_id: uuid.UUID) -> UserGoal:
    goal = session.execute(select(UserGoal).where(UserGoal.id == goal_id, UserGoal.user_subject == subject)).scalar()
    if goal is None:  # someone else's goal looks exactly like a missing one
        raise NotFound("goal not found", code="goal_not_found")
    return goal


def list_goals(session: Session, subject: str, status: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", code="invalid_goal_status")
    conds = [UserGoal.user_subject == subject] + ([UserGoal.status == status] if status else [])
    total = session.execute(select(func.count()).select_from(UserGoal).where(*conds)).scalar()
    rows = session.execute(select(UserGoal).where(*conds).order_by(UserGoal.updated_at.desc(), UserGoal.id)
                           .limit(limit).offset(offset)).scalars().all()
    return list(rows), int(total or 0)


def update(session: Session, tenant_id: uuid.UUID, subject: str, role: str, goal_id: uuid.UUID, *,
           text: str | None = None, status: str | None = None, note: str | None = None, settings: Settings,
           embedder: Embedder) -> UserGoal:
    if text is None and status is None and not (note and note.strip()):
        raise InvalidInput("nothing to change: give text, status or progress_note", code="empty_update")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", code="invalid_goal_status")
    goal = get(session, subject, goal_id)
    now = _now()
    changes: dict[str, Any] = {}
    if text is not None and _text(text) != goal.text:
        goal.text = _text(text)
        vec = embedder.embed([goal.text])[0]
        goal.embedding, goal.embedding_dim = [float(x) for x in vec], int(vec.shape[0])
        changes["text"] = True
        _note(goal, "goal text changed", now)
    if status is not None and status != goal.status:
        if status == "active" and _active_count(session, subject) >= settings.goals_max_active:
            raise Conflict("too many active goals to reopen this one", code="goal_limit_reached")
        changes["status"] = [goal.status, status]
        goal.status = status
        goal.closed_at = None if status == "active" else now
        _note(goal, f"status changed to {status}", now)
    if note and note.strip():
        _note(goal, note, now, source="user")
        changes["note"] = True
    goal.updated_at = now
    session.flush()
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=role, action="goal.update",
                 resource_type="goal", resource_id=str(goal.id), details=changes)
    return goal


def active_goals(session: Session, subject: str, vector: np.ndarray, limit: int = 10) -> list[tuple[UserGoal, float]]:
    """The user's active goals, most related to the message first."""
    dim = int(vector.shape[0])
    sim = (1 - sa.cast(UserGoal.embedding, Vector(dim)).cosine_distance([float(x) for x in vector])).label("sim")
    rows = session.execute(select(UserGoal, sim).where(UserGoal.user_subject == subject, UserGoal.status == "active",
                                                       UserGoal.embedding_dim == dim)
                           .order_by(sim.desc()).limit(limit)).all()
    return [(g, float(s)) for g, s in rows]


def note_progress(session: Session, goal: UserGoal, note: str, **extra: object) -> None:
    _note(goal, note, _now(), **extra)
    session.flush()
