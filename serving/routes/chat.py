from __future__ import annotations

import datetime as dt
import hashlib
import json
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

from agents.answer import AI_DISCLOSURE, Citation, citations_for, prepare
from compliance.classification import CLASS_NAMES
from core import audit, llm
from core.database import tenant_session
from core.errors import NotFound, PlatformError
from core.models import Conversation, Message
from retrieval.search import Caller
from serving.deps import PrincipalDep
from serving.errors import error_body
from serving.ratelimit import RateLimit

router = APIRouter(prefix="/v1", tags=["chat"])


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
    specialist: str | None = None
    ai_disclosure: str
    retrieval_notes: list[str]


class MessageOut(BaseModel):
    id: uuid.UUID
    role: str
    content: str
    citations: list[dict]
    model: str | None
    created_at: dt.datetime


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    messages: list[MessageOut] | None = None


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


def _history(s: Session, conv: Conversation) -> list[dict]:
    rows = s.execute(select(Message.role, Message.content).where(Message.conversation_id == conv.id)
                     .order_by(Message.created_at, Message.id)).all()
    return [{"role": r, "content": c} for r, c in rows]


def _audit(s: Session, principal, body: ChatIn, conv_id, msg_id, model: str, latency_ms: float,  # noqa: ANN001
           hits, cites: list[Citation], streamed: bool) -> None:
    qhash = hashlib.sha256(body.message.encode()).hexdigest()
    audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="chat", resource_type="message", resource_id=str(msg_id),
                 details={"conversation_id": str(conv_id), "question_sha256": qhash, "model": model,
                          "latency_ms": round(latency_ms, 1), "streamed": streamed,
                          "cited_chunk_ids": [str(c.chunk_id) for c in cites],
                          "retrieved_chunk_ids": [str(h.chunk_id) for h in hits]})
    for h in hits:  # the model saw these: each Class III/IV chunk is its own record
        if h.classification >= 3:
            audit.record(s, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                         action="chunk.access", resource_type="chunk", resource_id=str(h.chunk_id),
                         details={"document_id": str(h.document_id), "class": CLASS_NAMES[h.classification],
                                  "via": "chat", "message_id": str(msg_id)})


def _store_reply(principal, body: ChatIn, conv_id, prepared, text: str, model: str, latency_ms: float,  # noqa: ANN001
                 streamed: bool) -> tuple[uuid.UUID, list[Citation]]:
    cites = citations_for(text, prepared.hits)
    msg_id = uuid.uuid4()
    with tenant_session(principal.tenant_id) as s:
        s.add(Message(id=msg_id, tenant_id=principal.tenant_id, conversation_id=conv_id, role="assistant",
                      content=text, citations=[c.as_dict() for c in cites], model=model,
                      metadata_={"latency_ms": round(latency_ms, 1), "ai_disclosure": AI_DISCLOSURE}))
        s.execute(update(Conversation).where(Conversation.id == conv_id).values(updated_at=dt.datetime.now(dt.UTC)))
        _audit(s, principal, body, conv_id, msg_id, model, latency_ms, prepared.hits, cites, streamed)
    return msg_id, cites


def _begin(principal, body: ChatIn):  # noqa: ANN001, ANN202
    with tenant_session(principal.tenant_id) as s:
        conv = _conversation(s, principal, body.conversation_id, body.message)
        history = _history(s, conv)
        prepared = prepare(s, Caller(principal.role.value, principal.groups), body.message, history, k=body.k)
        s.add(Message(id=uuid.uuid4(), tenant_id=principal.tenant_id, conversation_id=conv.id, role="user",
                      content=body.message))
        return conv.id, prepared


def _chat_sync(principal, body: ChatIn) -> ChatOut:  # noqa: ANN001
    conv_id, prepared = _begin(principal, body)
    c = llm.complete(prepared.messages)
    msg_id, cites = _store_reply(principal, body, conv_id, prepared, c.text, c.model, c.latency_ms, False)
    return ChatOut(answer=c.text, citations=[CitationOut(**c.as_dict()) for c in cites], conversation_id=conv_id,
                   message_id=msg_id, model=c.model, ai_disclosure=AI_DISCLOSURE,
                   retrieval_notes=prepared.retrieval_notes)


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _chat_stream(principal, body: ChatIn, conv_id, prepared) -> Iterator[str]:  # noqa: ANN001
    t0 = time.perf_counter()
    model = llm.model_name()
    yield _sse("start", {"conversation_id": str(conv_id), "model": model, "ai_disclosure": AI_DISCLOSURE})
    parts: list[str] = []
    try:
        for delta in llm.stream(prepared.messages):
            parts.append(delta)
            yield _sse("delta", {"text": delta})
        text = "".join(parts)
        msg_id, cites = _store_reply(principal, body, conv_id, prepared, text, model,
                                     (time.perf_counter() - t0) * 1000, True)
    except PlatformError as exc:
        yield _sse("error", error_body(exc.code, exc.message)["error"])
        return
    yield _sse("citations", {"citations": [c.as_dict() for c in cites]})
    yield _sse("done", {"conversation_id": str(conv_id), "message_id": str(msg_id), "model": model,
                        "ai_disclosure": AI_DISCLOSURE, "retrieval_notes": prepared.retrieval_notes})


@router.post("/chat", response_model=ChatOut, dependencies=[RateLimit],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or SSE events start/delta*/citations/done with "
                                             "Accept: text/event-stream"}})
async def chat(body: ChatIn, principal: PrincipalDep, accept: Annotated[str | None, Header()] = None):  # noqa: ANN201
    """Ask a question; the answer is grounded in, and cites, documents the caller may read."""
    if accept and "text/event-stream" in accept:
        conv_id, prepared = await run_in_threadpool(_begin, principal, body)
        return StreamingResponse(_chat_stream(principal, body, conv_id, prepared), media_type="text/event-stream",
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
        msgs = s.execute(select(Message).where(Message.conversation_id == conv.id)
                         .order_by(Message.created_at, Message.id)).scalars().all()
        return ConversationOut(id=conv.id, title=conv.title, created_at=conv.created_at, updated_at=conv.updated_at,
                               messages=[MessageOut(id=m.id, role=m.role, content=m.content, citations=m.citations,
                                                    model=m.model, created_at=m.created_at) for m in msgs])
