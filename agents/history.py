"""Reading chat history and reasoning traces, redacted to what the caller may read *now*.

History is not a side channel (agents/answer_access.py): a stored answer or trace carries the access
label of everything its run saw, and every read checks that label — and the cited documents' current
class and ACL — against the caller's current role and groups. A withheld answer is replaced by a
notice (and is not fed to follow-ups: `model_history`); a withheld trace keeps its shape, not its text.
Reads of Class III/IV history that is shown are audited. Used by the chat routes and the chat use case
(agents/chat.py); the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from agents import answer_access
from compliance import audit
from core.errors import NotFound
from core.models import AgentRun, Conversation, Message
from retrieval.search import Caller


class Asker(Protocol):
    """Who reads or asks: conversations, traces and memories are the subject's, within one tenant
    (core.security.Principal, or agents.deps.Actor)."""

    @property
    def tenant_id(self) -> uuid.UUID | None: ...
    @property
    def subject(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def groups(self) -> tuple[str, ...]: ...


def caller_of(asker: Asker) -> Caller:
    return Caller(str(asker.role), tuple(asker.groups))


class MessageView(BaseModel):
    id: uuid.UUID
    role: str
    content: str
    citations: list[dict[str, Any]]
    model: str | None
    created_at: dt.datetime
    reasoning: dict[str, Any] | None = None
    # True when the answer was built from documents the caller may not read now (role lowered, group
    # removed, document reclassified): content is a notice, citations and reasoning are left out.
    withheld: bool = False


class ConversationView(BaseModel):
    id: uuid.UUID
    title: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    messages: list[MessageView] | None = None
    withheld: int = 0  # answers withheld from this response (see MessageView.withheld)


class TraceView(BaseModel):
    id: uuid.UUID
    user_subject: str
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    specialist: str
    model_tier: str
    model: str
    outcome: str
    escalations: int
    trace: list[dict[str, Any]]
    created_at: dt.datetime
    # Fields withheld because the run saw documents the caller may not read now (an admin without the
    # need-to-know group, a lowered role): the steps keep their shape, timings and outcomes, not their text.
    withheld: int = 0


def conversation(session: Session, asker: Asker, conversation_id: uuid.UUID) -> Conversation:
    """The caller's own conversation; someone else's looks exactly like a missing one (404)."""
    conv = session.execute(select(Conversation).where(Conversation.id == conversation_id,
                                                      Conversation.user_subject == asker.subject)).scalar()
    if conv is None:
        raise NotFound("conversation not found", code="conversation_not_found")
    return conv


def messages(session: Session, conversation_id: uuid.UUID) -> list[Message]:
    return list(session.execute(select(Message).where(Message.conversation_id == conversation_id)
                                .order_by(Message.created_at, Message.id)).scalars())


def visible(session: Session, asker: Asker, msgs: Sequence[Message]) -> list[bool]:
    """Per message: may the caller read it *now*? A user's own questions are always theirs. Answers
    stored before labels existed get theirs from their citations and run."""
    answers = [m for m in msgs if m.role == "assistant"]
    runs: dict[Any, Any] = {}
    if any(m.access is None for m in answers):
        runs = dict(session.execute(select(AgentRun.message_id, AgentRun.trace).where(
            AgentRun.message_id.in_([m.id for m in answers if m.access is None]))).all())
    labels = [m.access if m.access is not None else answer_access.derive_label(session, m.citations, runs.get(m.id))
              for m in answers]
    ok = dict(zip([m.id for m in answers], answer_access.readable(session, caller_of(asker), labels), strict=True))
    return [ok.get(m.id, True) for m in msgs]


def model_history(session: Session, asker: Asker, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
    """The turns a follow-up is answered with: only what the caller may read now — a withheld answer
    must not reach the model either."""
    msgs = messages(session, conversation_id)
    return [{"role": m.role, "content": m.content if ok else answer_access.REDACTED_ANSWER}
            for m, ok in zip(msgs, visible(session, asker, msgs), strict=True)]


def list_conversations(session: Session, asker: Asker, limit: int = 200) -> list[ConversationView]:
    rows = session.execute(select(Conversation).where(Conversation.user_subject == asker.subject)
                           .order_by(Conversation.updated_at.desc()).limit(limit)).scalars().all()
    return [ConversationView(id=c.id, title=c.title, created_at=c.created_at, updated_at=c.updated_at)
            for c in rows]


def read_conversation(session: Session, asker: Asker, conversation_id: uuid.UUID) -> ConversationView:
    """One conversation with its messages; answers the caller may not read now are withheld."""
    conv = conversation(session, asker, conversation_id)
    msgs = messages(session, conv.id)
    ok = visible(session, asker, msgs)
    out = [MessageView(id=m.id, role=m.role, content=m.content, citations=m.citations, model=m.model,
                       created_at=m.created_at, reasoning=(m.metadata_ or {}).get("reasoning")) if shown else
           MessageView(id=m.id, role=m.role, content=answer_access.REDACTED_ANSWER, citations=[], model=m.model,
                       created_at=m.created_at, withheld=True)
           for m, shown in zip(msgs, ok, strict=True)]
    audit.record_restricted_read(  # reads of Class III/IV history are audited (issue 12 #9)
        session, tenant_id=asker.tenant_id, actor=asker.subject, actor_role=str(asker.role),
        resource_type="conversation", resource_id=str(conv.id),
        labels=[m.access or answer_access.derive_label(session, m.citations, None)
                for m, shown in zip(msgs, ok, strict=True) if shown and m.role == "assistant"])
    return ConversationView(id=conv.id, title=conv.title, created_at=conv.created_at, updated_at=conv.updated_at,
                            messages=out, withheld=sum(1 for shown in ok if not shown))


def read_trace(session: Session, asker: Asker, trace_id: uuid.UUID) -> TraceView:
    """The reasoning trace of one answer (its asker, or an admin for audit), redacted to what the caller
    may read now."""
    run = session.get(AgentRun, trace_id)
    if run is None or (run.user_subject != asker.subject and str(asker.role) != "admin"):
        raise NotFound("trace not found", code="trace_not_found")
    label = run.access
    if label is None:  # stored before labels existed
        cites = session.execute(select(Message.citations).where(Message.id == run.message_id)).scalar() or []
        label = answer_access.derive_label(session, cites, run.trace)
    trace, withheld = run.trace, 0
    if not answer_access.readable(session, caller_of(asker), [label])[0]:
        trace, withheld = answer_access.redact_trace(run.trace)
    if trace is run.trace:  # shown unredacted: a read of Class III/IV reasoning is audited (issue 12 #9)
        audit.record_restricted_read(session, tenant_id=asker.tenant_id, actor=asker.subject,
                                     actor_role=str(asker.role), resource_type="trace",
                                     resource_id=str(run.id), labels=[label])
    return TraceView(id=run.id, user_subject=run.user_subject, conversation_id=run.conversation_id,
                     message_id=run.message_id, specialist=run.specialist, model_tier=run.model_tier,
                     model=run.model, outcome=run.outcome, escalations=run.escalations, trace=trace,
                     created_at=run.created_at, withheld=withheld)
