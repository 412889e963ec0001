from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from agents import chat as chat_case
from agents import history
from agents.deps import AgentDeps
from core.db.database import tenant_session
from core.errors import PlatformError
from core.llm import Model
from core.security import Principal
from serving.deps import ModelDep, PrincipalDep, TenantSessionDep, agent_deps
from serving.errors import error_body
from serving.ratelimit import RateLimit

router = APIRouter(prefix="/v1", tags=["chat"])
log = logging.getLogger(__name__)


class ChatIn(BaseModel):
    message: Annotated[str, Field(min_length=1, max_length=4000)]
    conversation_id: uuid.UUID | None = None
    k: Annotated[int, Field(ge=1, le=20)] = 6
    # A model tier (LIGHT / STANDARD / HEAVY) to answer on instead of the one the platform picks; one the
    # tenant may not use is refused (403 tier_not_allowed) or downgraded, as its tier policy says.
    tier: Annotated[str | None, Field(max_length=20)] = None


class CitationOut(chat_case.CitationView):
    """A document passage (kind "document": document, chunk, page, section, score) or a system record (kind
    "record": SAP/MES system, entity, key, as-of time, live read or extract)."""


class ChatOut(chat_case.ChatResult):
    citations: list[CitationOut]  # type: ignore[assignment]  # the API's projection of a citation
    records: list[Any] = Field(default_factory=list, exclude=True)  # listed in `citations` (kind "record")


class MessageOut(history.MessageView):
    pass


class ConversationOut(history.ConversationView):
    messages: list[MessageOut] | None = None  # type: ignore[assignment]


def _open_deps(principal: Principal, model: Model) -> Callable[[], AbstractContextManager[AgentDeps]]:
    """A transaction for the caller's tenant, with the request's AgentDeps on it (the chat use case runs two)."""
    @contextmanager
    def open_deps() -> Iterator[AgentDeps]:
        with tenant_session(principal.tenant_id) as s:
            yield agent_deps(s, principal, model)

    return open_deps


def _check_conversation(principal: Principal, conversation_id: uuid.UUID) -> None:
    with tenant_session(principal.tenant_id) as s:
        chat_case.check_conversation(s, principal, conversation_id)


def _check_tier(principal: Principal, tier: str) -> None:
    """Refuse a tier the tenant may not use before a stream starts (403 / 422); the run applies it again."""
    from core.llm import tiers
    from core.repos import tenants
    from core.settings import get_settings

    with tenant_session(principal.tenant_id) as s:
        tiers.stored(tenants.settings(s, principal.tenant_id), get_settings()).resolve(tier)


def _chat_sync(principal: Principal, body: ChatIn, model: Model) -> ChatOut:
    res = chat_case.ask(_open_deps(principal, model), body.message, body.conversation_id, k=body.k, tier=body.tier)
    return ChatOut(**res.as_dict())


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def _chat_stream(principal: Principal, body: ChatIn, model: Model) -> AsyncIterator[str]:
    """start, then the answer as the model writes it (delta; retract when a later draft replaces a shown one;
    replace when the verified answer differs from what was shown), then citations and done. The work runs to
    the end (stored, audited, usage recorded) even when the client disconnects mid-stream."""
    yield _sse("start", {"model": chat_case.start_model(), "ai_disclosure": chat_case.AI_DISCLOSURE})
    relay = chat_case.stream_answer(_open_deps(principal, model), body.message, body.conversation_id, k=body.k,
                                    tier=body.tier)
    finished = False
    try:
        while True:
            kind, data = await run_in_threadpool(relay.events.get)
            if kind == "result":
                finished = True
                break
            if kind == "error":
                finished = True
                if isinstance(data, PlatformError):
                    yield _sse("error", error_body(data.code, data.message, data.details)["error"])
                else:
                    log.error("chat stream failed", exc_info=data)
                    yield _sse("error", error_body("internal_error", "internal server error")["error"])
                return
            yield _sse(kind, data if isinstance(data, dict) else {"text": data})
    finally:
        if not finished:
            relay.disconnected.set()
    done = data.as_dict()
    yield _sse("citations", {"citations": done.pop("citations")})
    for streamed_already in ("answer", "trace"):  # the deltas carried the answer; the trace is at /v1/traces
        del done[streamed_already]
    yield _sse("done", done)


@router.post("/chat", response_model=ChatOut, dependencies=[RateLimit],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or with Accept: text/event-stream SSE events start, "
                                             "delta* (the answer as the model writes it), retract/replace (a "
                                             "draft withdrawn or replaced by the verified answer), citations, "
                                             "done; or error"}})
async def chat(body: ChatIn, principal: PrincipalDep, model: ModelDep,
               accept: Annotated[str | None, Header()] = None) -> Any:
    """Ask a question; the answer is grounded in, and cites, documents the caller may read."""
    if accept and "text/event-stream" in accept:
        if body.conversation_id is not None:  # a bad conversation id is a 404 before the stream starts
            await run_in_threadpool(_check_conversation, principal, body.conversation_id)
        if body.tier is not None:  # so is a tier the tenant may not use (403) or that does not exist (422)
            await run_in_threadpool(_check_tier, principal, body.tier)
        return StreamingResponse(_chat_stream(principal, body, model), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await run_in_threadpool(_chat_sync, principal, body, model)


@router.get("/conversations", response_model=list[ConversationOut])
def list_conversations(principal: PrincipalDep, db: TenantSessionDep) -> list[ConversationOut]:
    return [ConversationOut(**c.model_dump()) for c in history.list_conversations(db, principal)]


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
def get_conversation(conversation_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> ConversationOut:
    return ConversationOut(**history.read_conversation(db, principal, conversation_id).model_dump())


class TraceOut(history.TraceView):
    pass


@router.get("/traces/{trace_id}", response_model=TraceOut)
def get_trace(trace_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> TraceOut:
    """The reasoning trace of one answer (its asker, or an admin for audit), redacted to what the caller may
    read now."""
    return TraceOut(**history.read_trace(db, principal, trace_id).model_dump())
