"""What a composition works with: the orchestrator's seams (typed), its branches and its result."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from agents.answer import Prepared
from agents.specialists import Specialist
from agents.trace import Trace
from agents.verify import Verdict
from core.embedding import Embedder
from core.llm import Model
from retrieval.search import Caller


@dataclass
class Draft:
    text: str
    model: str
    tier: str
    escalations: int
    verdict: Verdict


class DraftFn(Protocol):
    """The orchestrator's generate → VERIFY → escalate loop for one specialist (orchestrator._draft)."""

    def __call__(self, session: Session, caller: Caller, message: str, prepared: Prepared, tool_texts: list[str],
                 direct: str | None, skill_name: str | None, start_tier: str, lm: Model, calls: list[dict[str, Any]],
                 trace: Trace, model_for: Callable[[str], str], *, escalate: bool = True) -> Draft: ...


class SkillFn(Protocol):
    """The orchestrator's rule-based skill step (orchestrator._skill): (tool texts, direct answer, skill)."""

    def __call__(self, session: Session, caller: Caller, spec: Specialist, message: str, prepared: Prepared,
                 model_for: Callable[[str], str], trace: Trace) -> tuple[list[str], str | None, str | None]: ...


@dataclass
class Deps:
    """What a composition needs from the orchestrator: the request, its session and the seams.
    `draft` is the orchestrator's generate → VERIFY → escalate loop for one specialist, `skill` its
    rule-based skill step; VERIFY itself is agents/verify.py."""
    session: Session
    caller: Caller
    message: str
    history: list[dict[str, Any]]
    k: int
    model: Model
    embedder: Embedder
    calls: list[dict[str, Any]]
    trace: Trace
    model_for: Callable[[str], str]
    tenant_id: uuid.UUID | None
    draft: DraftFn
    skill: SkillFn


@dataclass
class Branch:
    specialist: str
    question: str  # the part of the request this specialist answers
    prepared: Prepared
    tool_texts: list[str] = field(default_factory=list)
    direct: str | None = None
    skill_name: str | None = None
    draft: Draft | None = None
    steps: Trace = field(default_factory=Trace)
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Composed:
    text: str
    prepared: Prepared  # hits = the merged source list the [n] markers point into
    model: str
    tier: str
    escalations: int
    verdict: Verdict
    tool_texts: list[str]
    outcome: str | None = None  # "refused" when the quality gate refuses; else the orchestrator decides
    reasoning: dict[str, Any] | None = None
