from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agents import answer_access, learning, orchestrator
from agents.answer import AI_DISCLOSURE, Citation
from compliance.classification import CLASS_NAMES
from core import audit, llm
from core.database import tenant_session
from core.errors import NotFound, PlatformError
from core.models import AgentRun, Conversation, Message
from retrieval.search import Caller
from serving.deps import PrincipalDep
from serving.errors import error_body
from serving.ratelimit import RateLimit

router = APIRouter(prefix="/v1", tags=["chat"])
log = logging.getLogger(__name__)


class ChatIn(BaseModel):
    message: Annotated[str, Field(min_length=1, max_length=4000)]
    conversation_id: uuid.UUID | None = None
    k: Annotated[int, Field(ge=1, le=20)] = 6


class CitationOut(BaseModel):
    n: int
    document_id: uuid.UUID
    title: str
    chunk_id: uuid.UUID
    page: int | None
    section: str | None
    score: float


class ChatOut(BaseModel):
    answer: str
    citations: list[CitationOut]
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


class MessageOut(BaseModel):
    id: uuid.UUID
    role: str
    content: str
    citations: list[dict]
    model: str | None
    created_at: dt.datetime
    reasoning: dict | None = None
    # True when the answer was built from documents the caller may not read now (role lowered, group
    # removed, document reclassified): content is a notice, citations and reasoning are left out.
    withheld: bool = False


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    messages: list[MessageOut] | None = None
    withheld: int = 0  # answers withheld from this response (see MessageOut.withheld)


def _conversation(s: Session, principal, conversation_id: uuid.UUID | None, first_message: str) -> Conversation:  # noqa: ANN001
    if conversation_id is not None:
        conv = s.execute(select(Conversation).where(Conversation.id == conversation_id,
                                                    Conversation.user_subject == principal.subject)).scalar()
        if conv is None:  # someone else's conversation looks exactly like a missing one
            raise NotFound("conversation not found", code="conversation_not_found")
        return conv
    conv = Conversation(id=uuid.uuid4(), tenant_id=principal.tenant_id, user_subject=principal.subject,
                        title=first_message[:80])
    s.add(conv)
    s.flush()
    return conv


def _visible(s: Session, principal, msgs: list[Message]) -> list[bool]:  # noqa: ANN001
    """Per message: may the caller read it *now* (agents/answer_access.py)? A user's own questions are
    always theirs. Answers stored before labels existed get theirs from their citations and run."""
    answers = [m for m in msgs if m.role == "assistant"]
    runs = {}
    if any(m.access is None for m in answers):
        runs = dict(s.execute(select(AgentRun.message_id, AgentRun.trace).where(
            AgentRun.message_id.in_([m.id for m in answers if m.access is None]))).all())
    labels = [m.access if m.access is not None else answer_access.derive_label(s, m.citations, runs.get(m.id))
              for m in answers]
    ok = dict(zip([m.id for m in answers], answer_access.readable(s, _caller(principal), labels), strict=True))
    return [ok.get(m.id, True) for m in msgs]


def _caller(principal) -> Caller:  # noqa: ANN001
    return Caller(principal.role.value, principal.groups)


def _history(s: Session, conv: Conversation, principal) -> list[dict]:  # noqa: ANN001
    # Follow-ups see only what the caller may read now: a withheld answer must not reach the model either.
    msgs = list(s.execute(select(Message).where(Message.conversation_id == conv.id)
                          .order_by(Message.created_at, Message.id)).scalars())
    return [{"role": m.role, "content": m.content if ok else answer_access.REDACTED_ANSWER}
            for m, ok in zip(msgs, _visible(s, principal, msgs), strict=True)]


def _check_conversation(principal, conversation_id: uuid.UUID) -> None:  # noqa: ANN001
    with tenant_session(principal.tenant_id) as s:
        _conversation(s, principal, conversation_id, "")


def _audit(s: Session, principal, body: ChatIn, conv_id, msg_id, model: str, latency_ms: float,  # noqa: ANN001
           hits, cites: list[Citation], streamed: bool, extra: dict | None = None) -> None:
    qhash = hashlib.sha256(body.message.encode()).hexdigest()
    audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="chat", resource_type="message", resource_id=str(msg_id),
                 details={"conversation_id": str(conv_id), "question_sha256": qhash, "model": model,
                          "latency_ms": round(latency_ms, 1), "streamed": streamed,
                          "cited_chunk_ids": [str(c.chunk_id) for c in cites],
                          "retrieved_chunk_ids": [str(h.chunk_id) for h in hits], **(extra or {})})
    for h in hits:  # the model saw these: each Class III/IV chunk is its own record
        if h.classification >= 3:
            audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                         action="chunk.access", resource_type="chunk", resource_id=str(h.chunk_id),
                         details={"document_id": str(h.document_id), "class": CLASS_NAMES[h.classification],
                                  "via": "chat", "message_id": str(msg_id)})


def _store_reply(principal, body: ChatIn, conv_id, out: orchestrator.Outcome, latency_ms: float,  # noqa: ANN001
                 streamed: bool) -> tuple[uuid.UUID, uuid.UUID]:
    msg_id = uuid.uuid4()
    with tenant_session(principal.tenant_id) as s:
        s.add(Message(id=msg_id, tenant_id=principal.tenant_id, conversation_id=conv_id, role="assistant",
                      content=out.text, citations=[c.as_dict() for c in out.citations], model=out.model,
                      specialist=out.specialist, index_version=out.prepared.index_version,
                      access=answer_access.label_for_outcome(s, out),
                      metadata_={"latency_ms": round(latency_ms, 1), "ai_disclosure": AI_DISCLOSURE,
                                 "model_tier": out.tier, "outcome": out.outcome, "composition": out.composition,
                                 "reasoning": out.reasoning}))
        s.execute(update(Conversation).where(Conversation.id == conv_id).values(updated_at=dt.datetime.now(dt.UTC)))
        # LEARN (memories, goal progress, lesson) in the same transaction; it annotates the trace's LEARN step.
        learning.after_answer(s, principal.tenant_id, principal.subject, Caller(principal.role.value, principal.groups),
                              body.message, out, conv_id, msg_id)
        run_id = orchestrator.record(s, principal.tenant_id, principal.subject, out, conv_id, msg_id)
        _audit(s, principal, body, conv_id, msg_id, out.model, latency_ms, out.prepared.hits, out.citations, streamed,
               extra={"specialist": out.specialist, "model_tier": out.tier, "outcome": out.outcome,
                      "index_version": out.prepared.index_version,
                      "trace_id": str(run_id), "tools": [st.get("tool") for st in out.trace if st.get("tool")],
                      "tool_calls": [{k: st.get(k) for k in ("tool", "args", "result", "denied", "requested_by")
                                      if st.get(k) is not None}
                                     for st in out.trace if st["step"] == "THINK.skill"]})
    return msg_id, run_id


def _answer(principal, body: ChatIn) -> tuple[uuid.UUID, orchestrator.Outcome, float]:  # noqa: ANN001
    t0 = time.perf_counter()
    with tenant_session(principal.tenant_id) as s:
        conv = _conversation(s, principal, body.conversation_id, body.message)
        history = _history(s, conv, principal)
        s.add(Message(id=uuid.uuid4(), tenant_id=principal.tenant_id, conversation_id=conv.id, role="user",
                      content=body.message))
        out = orchestrator.run(s, Caller(principal.role.value, principal.groups), principal.subject, body.message,
                               history, k=body.k, tenant_id=principal.tenant_id)
        conv_id = conv.id
    return conv_id, out, (time.perf_counter() - t0) * 1000


def _chat_sync(principal, body: ChatIn) -> ChatOut:  # noqa: ANN001
    conv_id, out, ms = _answer(principal, body)
    msg_id, run_id = _store_reply(principal, body, conv_id, out, ms, False)
    return ChatOut(answer=out.text, citations=[CitationOut(**c.as_dict()) for c in out.citations],
                   conversation_id=conv_id, message_id=msg_id, model=out.model, specialist=out.specialist,
                   model_tier=out.tier, outcome=out.outcome, trace_id=run_id, trace=out.trace,
                   ai_disclosure=AI_DISCLOSURE, retrieval_notes=out.prepared.retrieval_notes,
                   index_version=out.prepared.index_version, reasoning=out.reasoning)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


_WORD = re.compile(r"\S+\s*")


def _chat_stream(principal, body: ChatIn) -> Iterator[str]:  # noqa: ANN001
    # The start event goes out at once; the answer is streamed after VERIFY has passed it.
    yield _sse("start", {"model": llm.model_name(), "ai_disclosure": AI_DISCLOSURE})
    try:
        conv_id, out, ms = _answer(principal, body)
        for word in _WORD.findall(out.text):
            yield _sse("delta", {"text": word})
        msg_id, run_id = _store_reply(principal, body, conv_id, out, ms, True)
    except PlatformError as exc:
        yield _sse("error", error_body(exc.code, exc.message, exc.details)["error"])
        return
    except Exception:  # noqa: BLE001 - the response has started: the client must still see why it ends
        log.exception("chat stream failed")
        yield _sse("error", error_body("internal_error", "internal server error")["error"])
        return
    yield _sse("citations", {"citations": [c.as_dict() for c in out.citations]})
    yield _sse("done", {"conversation_id": str(conv_id), "message_id": str(msg_id), "model": out.model,
                        "specialist": out.specialist, "model_tier": out.tier, "outcome": out.outcome,
                        "trace_id": str(run_id), "ai_disclosure": AI_DISCLOSURE,
                        "retrieval_notes": out.prepared.retrieval_notes,
                        "index_version": out.prepared.index_version, "reasoning": out.reasoning})


@router.post("/chat", response_model=ChatOut, dependencies=[RateLimit],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or SSE events start/delta*/citations/done with "
                                             "Accept: text/event-stream"}})
async def chat(body: ChatIn, principal: PrincipalDep, accept: Annotated[str | None, Header()] = None):  # noqa: ANN201
    """Ask a question; the answer is grounded in, and cites, documents the caller may read."""
    if accept and "text/event-stream" in accept:
        if body.conversation_id is not None:  # a bad conversation id is a 404 before the stream starts
            await run_in_threadpool(_check_conversation, principal, body.conversation_id)
        return StreamingResponse(_chat_stream(principal, body), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await run_in_threadpool(_chat_sync, principal, body)


@router.get("/conversations", response_model=list[ConversationOut])
def list_conversations(principal: PrincipalDep) -> list[ConversationOut]:
    with tenant_session(principal.tenant_id) as s:
        rows = s.execute(select(Conversation).where(Conversation.user_subject == principal.subject)
                         .order_by(Conversation.updated_at.desc()).limit(200)).scalars().all()
        return [ConversationOut(id=c.id, title=c.title, created_at=c.created_at, updated_at=c.updated_at)
                for c in rows]


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
def get_conversation(conversation_id: uuid.UUID, principal: PrincipalDep) -> ConversationOut:
    with tenant_session(principal.tenant_id) as s:
        conv = _conversation(s, principal, conversation_id, "")
        msgs = list(s.execute(select(Message).where(Message.conversation_id == conv.id)
                              .order_by(Message.created_at, Message.id)).scalars())
        visible = _visible(s, principal, msgs)
        out = [MessageOut(id=m.id, role=m.role, content=m.content, citations=m.citations, model=m.model,
                          created_at=m.created_at, reasoning=(m.metadata_ or {}).get("reasoning")) if ok else
               MessageOut(id=m.id, role=m.role, content=answer_access.REDACTED_ANSWER, citations=[], model=m.model,
                          created_at=m.created_at, withheld=True)
               for m, ok in zip(msgs, visible, strict=True)]
        audit.record_restricted_read(  # reads of Class III/IV history are audited (issue 12 #9)
            s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
            resource_type="conversation", resource_id=str(conv.id),
            labels=[m.access or answer_access.derive_label(s, m.citations, None)
                    for m, ok in zip(msgs, visible, strict=True) if ok and m.role == "assistant"])
        return ConversationOut(id=conv.id, title=conv.title, created_at=conv.created_at, updated_at=conv.updated_at,
                               messages=out, withheld=sum(1 for ok in visible if not ok))


class TraceOut(BaseModel):
    id: uuid.UUID
    user_subject: str
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    specialist: str
    model_tier: str
    model: str
    outcome: str
    escalations: int
    trace: list[dict]
    created_at: dt.datetime
    # Fields withheld because the run saw documents the caller may not read now (an admin without the
    # need-to-know group, a lowered role): the steps keep their shape, timings and outcomes, not their text.
    withheld: int = 0


@router.get("/traces/{trace_id}", response_model=TraceOut)
def get_trace(trace_id: uuid.UUID, principal: PrincipalDep) -> TraceOut:
    """The reasoning trace of one answer (its asker, or an admin for audit), redacted to what the caller may
    read now."""
    from core.models import Role

    with tenant_session(principal.tenant_id) as s:
        run = s.get(AgentRun, trace_id)
        if run is None or (run.user_subject != principal.subject and principal.role != Role.admin):
            raise NotFound("trace not found", code="trace_not_found")
        label = run.access
        if label is None:  # stored before labels existed
            cites = s.execute(select(Message.citations).where(Message.id == run.message_id)).scalar() or []
            label = answer_access.derive_label(s, cites, run.trace)
        trace, withheld = run.trace, 0
        if not answer_access.readable(s, _caller(principal), [label])[0]:
            trace, withheld = answer_access.redact_trace(run.trace)
        if trace is run.trace:  # shown unredacted: a read of Class III/IV reasoning is audited (issue 12 #9)
            audit.record_restricted_read(s, tenant_id=principal.tenant_id, actor=principal.subject,
                                         actor_role=principal.role.value, resource_type="trace",
                                         resource_id=str(run.id), labels=[label])
        return TraceOut(id=run.id, user_subject=run.user_subject, conversation_id=run.conversation_id,
                        message_id=run.message_id, specialist=run.specialist, model_tier=run.model_tier,
                        model=run.model, outcome=run.outcome, escalations=run.escalations, trace=trace,
                        created_at=run.created_at, withheld=withheld)
