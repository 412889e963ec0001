"""Golden-dataset evaluation runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import EvalRun


def latest(session: Session, kind: str = "nightly") -> EvalRun | None:
    """The newest run of one kind (nightly | gate)."""
    return session.execute(select(EvalRun).where(EvalRun.kind == kind).order_by(EvalRun.created_at.desc())
                           .limit(1)).scalar()
