"""The chat use case: one question from `POST /v1/chat` (JSON or SSE) or `eap ask`, the same path for both.

Two transactions, each owned by the edge that calls (it passes AgentDeps on its Session, agents/deps.py):
1. `answer`: open or continue the caller's conversation, store the question, run the orchestrator with
   the history the caller may read now (OBSERVE → THINK → VERIFY; PII is sanitised when Class III/IV
   sources are cited) → `Pending`. The question is committed with it.
2. `store`: store the answer with the access label of everything its run saw (agents/answer_access.py),
   LEARN, record the run, and audit it — one `chat` record (question hash, cited and retrieved chunks,
   model, latency, tools) and one `chunk.access` record per Class III/IV chunk the model saw → `ChatResult`.
Between the two an SSE edge streams the already verified answer; `ask` runs both for edges that do not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.orm import Session

from agents import answer_access, history, learning, orchestrator
from agents.answer import AI_DISCLOSURE, Citation
from agents.deps import AgentDeps
from agents.trace import UNSET
from compliance import audit
from compliance.classification import CLASS_NAMES
from core import llm
from core.errors import InvalidInput
from core.models import Conversation, Message

__all__ = ["AI_DISCLOSURE", "ChatResult", "Pending", "answer", "ask", "check_conversation", "start_model", "store"]


@dataclass(frozen=True)
class Pending:
    """An answered question whose answer is not stored yet (`store` does that)."""

    conversation_id: uuid.UUID
    question: str
    outcome: orchestrator.Outcome
    latency_ms: float  # opening the conversation to the verified answer


class ChatResult(BaseModel):
    """One stored answer. The API's `ChatOut` is this shape (serving/routes/chat.py)."""

    answer: str
    citations: list[Citation]
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    model: str
    specialist: str
    model_tier: str
    outcome: str
    trace_id: uuid.UUID
    trace: list[dict]
    ai_disclosure: str
    retrieval_notes: list[str]
    index_version: int | None = None  # the search index version the answer's sources came from
    # A thinking tool's output (Council / RedTeam / FirstPrinciples) for a collapsible reasoning
    # section; null for answers that used none.
    reasoning: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of `POST /v1/chat`'s answer (`eap ask --json` prints it)."""
        return {**self.model_dump(mode="json", exclude={"citations"}),
                "citations": [c.as_dict() for c in self.citations]}


def start_model() -> str:
    """The model named before an answer exists (the SSE `start` event)."""
    return llm.model_name()


def check_conversation(session: Session, asker: history.Asker, conversation_id: uuid.UUID) -> None:
    """Raise NotFound unless the caller may continue this conversation (before a stream starts)."""
    history.conversation(session, asker, conversation_id)


def answer(deps: AgentDeps, question: str, conversation_id: uuid.UUID | None = None, *, k: int = 6) -> Pending:
    """Open (or continue) the caller's conversation, store the question and answer it."""
    t0 = time.perf_counter()
    session, asker = deps.session, deps.caller
    tenant_id = _tenant(deps)
    if conversation_id is not None:
        conv = history.conversation(session, asker, conversation_id)
        turns = history.model_history(session, asker, conv.id)
    else:
        conv = Conversation(id=uuid.uuid4(), tenant_id=tenant_id, user_subject=asker.subject, title=question[:80])
        session.add(conv)
        session.flush()
        turns = []
    session.add(Message(id=uuid.uuid4(), tenant_id=tenant_id, conversation_id=conv.id, role="user", content=question))
    out = orchestrator.run(deps, question, turns, k=k)
    return Pending(conv.id, question, out, (time.perf_counter() - t0) * 1000)


def store(deps: AgentDeps, pending: Pending, *, streamed: bool = False, channel: str = "api") -> ChatResult:
    """Store the answer, LEARN, record the run and audit it. `channel` ("api", "cli") is recorded in the
    audit record; everything else is the same whichever edge asked."""
    session, asker, tenant_id = deps.session, deps.caller, _tenant(deps)
    out, conv_id, msg_id = pending.outcome, pending.conversation_id, uuid.uuid4()
    session.add(Message(id=msg_id, tenant_id=tenant_id, conversation_id=conv_id, role="assistant",
                        content=out.text, citations=[c.as_dict() for c in out.citations], model=out.model,
                        specialist=out.specialist, index_version=out.prepared.index_version,
                        access=answer_access.label_for_outcome(session, out),
                        metadata_={"latency_ms": round(pending.latency_ms, 1), "ai_disclosure": AI_DISCLOSURE,
                                   "model_tier": out.tier, "outcome": out.outcome, "composition": out.composition,
                                   "reasoning": out.reasoning}))
    session.execute(update(Conversation).where(Conversation.id == conv_id).values(updated_at=dt.datetime.now(dt.UTC)))
    # LEARN (memories, goal progress, lesson) in the same transaction; it annotates the trace's LEARN step.
    learning.after_answer(deps, pending.question, out, conv_id, msg_id)
    run_id = orchestrator.record(session, tenant_id, asker.subject, out, conv_id, msg_id, settings=deps.settings)
    _audit(deps, pending, msg_id, run_id, streamed=streamed, channel=channel)
    return ChatResult(answer=out.text, citations=out.citations, conversation_id=conv_id, message_id=msg_id,
                      model=out.model, specialist=out.specialist, model_tier=out.tier, outcome=out.outcome,
                      trace_id=run_id, trace=out.trace, ai_disclosure=AI_DISCLOSURE,
                      retrieval_notes=out.prepared.retrieval_notes, index_version=out.prepared.index_version,
                      reasoning=out.reasoning)


def ask(open_deps: Callable[[], AbstractContextManager[AgentDeps]], question: str,
        conversation_id: uuid.UUID | None = None, *, k: int = 6, channel: str = "api") -> ChatResult:
    """`answer` then `store`, each in a transaction of its own: `open_deps()` opens one for the caller's
    tenant and yields the AgentDeps on it."""
    with open_deps() as deps:
        pending = answer(deps, question, conversation_id, k=k)
    with open_deps() as deps:
        return store(deps, pending, streamed=False, channel=channel)


def _tenant(deps: AgentDeps) -> uuid.UUID:
    if deps.tenant_id is None:
        raise InvalidInput("a chat needs a tenant: conversations and audit records belong to one")
    return deps.tenant_id


def _audit(deps: AgentDeps, pending: Pending, msg_id: uuid.UUID, run_id: uuid.UUID, *, streamed: bool,
           channel: str) -> None:
    session, tenant_id, out = deps.session, _tenant(deps), pending.outcome
    actor, role = deps.caller.subject, deps.caller.role
    hits = out.prepared.hits
    audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=role,
                 action="chat", resource_type="message", resource_id=str(msg_id),
                 details={"conversation_id": str(pending.conversation_id),
                          "question_sha256": hashlib.sha256(pending.question.encode()).hexdigest(),
                          "model": out.model, "latency_ms": round(pending.latency_ms, 1), "streamed": streamed,
                          "channel": channel,
                          "cited_chunk_ids": [str(c.chunk_id) for c in out.citations],
                          "retrieved_chunk_ids": [str(h.chunk_id) for h in hits],
                          "specialist": out.specialist, "model_tier": out.tier, "outcome": out.outcome,
                          "index_version": out.prepared.index_version, "trace_id": str(run_id),
                          "tools": out.steps.tools(),
                          "tool_calls": [{k: v for k in ("tool", "args", "result", "denied", "requested_by")
                                          if (v := getattr(st, k)) is not UNSET and v is not None}
                                         for st in out.steps.skills]})
    for h in hits:  # the model saw these: each Class III/IV chunk is its own record
        if h.classification >= 3:
            audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=role,
                         action="chunk.access", resource_type="chunk", resource_id=str(h.chunk_id),
                         details={"document_id": str(h.document_id), "class": CLASS_NAMES[h.classification],
                                  "via": "chat", "message_id": str(msg_id)})
