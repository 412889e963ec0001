"""The OpenAI-compatible chat API: `POST /v1/chat/completions` (plain and streamed) and `GET /v1/models`, for
existing clients (the OpenAI SDKs, Open WebUI, LangChain) pointed at the platform.

Same use case as `POST /v1/chat` (agents/chat.py): routing, retrieval with the caller's access filter, VERIFY,
the guards, storage and the audit record (channel "openai"). Authentication is the platform's own: the
client's API key is a platform token (or API key), sent as `Authorization: Bearer`.

- Models: "auto" (the router picks the specialist) and one model per specialist key (routing skipped);
  either with `@<tier>` ("auto@HEAVY", or `{"eap": {"tier": ...}}`) answers on that model tier, within the
  tenant's tier policy (a tier it may not use: 403 `tier_not_allowed`, or downgraded when the policy says
  so; `eap.model_tier` is the tier used). The tiers a tenant may use: `GET /v1/admin/settings`.
- The question is the last user message. The platform keeps conversation history itself: earlier messages
  of the request are not replayed; to continue a conversation pass `{"eap": {"conversation_id": ...}}`
  (the SDK's `extra_body`).
- Extension field `eap` on the completion (and on the final chunk of a stream): citations (document, chunk,
  page, section), conversation_id, message_id, trace_id, specialist, model_tier, outcome, ai_disclosure,
  retrieval_notes. `usage` counts the tokens the model server reported for the answer's model calls.
- Streaming: OpenAI's stream format cannot take text back, so the stream carries the verified answer only
  (the live policy HOLD); `POST /v1/chat` with SSE shows drafts live and retracts them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from agents import chat as chat_case
from agents.specialists import SPECIALISTS
from core.errors import InvalidInput, PlatformError
from core.llm import Model, tiers
from core.security import Principal
from serving.deps import ModelDep, PrincipalDep
from serving.errors import error_body
from serving.ratelimit import RateLimit
from serving.routes.chat import _check_conversation, _check_tier, _open_deps

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

AUTO = "auto"
OWNER = "enterprise-agent-platform"
MAX_QUESTION = 4000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id: accepted, not used
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class EapIn(BaseModel):
    conversation_id: uuid.UUID | None = None
    k: Annotated[int, Field(ge=1, le=20)] = 6
    tier: Annotated[str | None, Field(max_length=20)] = None


class CompletionIn(BaseModel):
    # Sampling options of the OpenAI API (temperature, max_tokens, ...) are accepted and ignored: the tiers'
    # models and their settings belong to the platform.
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(min_length=1, max_length=100)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=200)]
    stream: bool = False
    eap: EapIn = Field(default_factory=EapIn)


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER
    description: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class MessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceOut(BaseModel):
    index: int = 0
    message: MessageOut
    finish_reason: Literal["stop"] = "stop"


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class EapOut(BaseModel):
    """The platform's extension of a completion."""

    citations: list[dict[str, Any]]
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    trace_id: uuid.UUID
    model: str  # the model (or skill) that wrote the answer
    specialist: str
    model_tier: str
    outcome: str
    ai_disclosure: str
    retrieval_notes: list[str]


class CompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut
    eap: EapOut


_CREATED = int(time.time())


@router.get("/models", response_model=ModelList)
def list_models(principal: PrincipalDep) -> ModelList:
    """"auto" and the specialists, as models."""
    data = [ModelOut(id=AUTO, created=_CREATED, description="The router picks the specialist for each question.")]
    data += [ModelOut(id=key, created=_CREATED, description=spec.description) for key, spec in SPECIALISTS.items()]
    return ModelList(data=data)


def _tier(body: CompletionIn) -> str | None:
    """The model tier the request asks for (`model` "<name>@<tier>" or `eap.tier`), or None — or a 422."""
    _, at, suffix = body.model.partition("@")
    asked = [tiers.tier_name(suffix, field_name="model")] if at else []
    if body.eap.tier is not None:
        asked.append(tiers.tier_name(body.eap.tier, field_name="eap.tier"))
    if len(set(asked)) > 1:
        raise InvalidInput("the model's @tier and eap.tier differ", code="conflicting_tier",
                           details={"tiers": asked})
    return asked[0] if asked else None


def _question(body: CompletionIn) -> tuple[str, str | None]:
    """(the last user message, the specialist asked for or None for auto) — or a 400."""
    name = body.model.partition("@")[0]
    if name != AUTO and name not in SPECIALISTS:
        raise InvalidInput(f"unknown model {body.model!r}; GET /v1/models lists them", code="model_not_found",
                           details={"models": [AUTO, *SPECIALISTS]})
    user = [m for m in body.messages if m.role == "user"]
    if not user:
        raise InvalidInput("the messages contain no user message", code="no_user_message")
    content = user[-1].content
    text = content if isinstance(content, str) else " ".join(p.text or "" for p in content or [] if p.type == "text")
    text = text.strip()
    if not text:
        raise InvalidInput("the last user message has no text", code="empty_message")
    if len(text) > MAX_QUESTION:
        raise InvalidInput(f"the last user message exceeds {MAX_QUESTION} characters", code="message_too_long")
    return text, None if name == AUTO else name


def _usage(res: chat_case.ChatResult) -> UsageOut:
    gen = [st for st in res.trace if "completion_tokens" in st]  # THINK.generate steps that called a model
    p = sum(int(st.get("prompt_tokens") or 0) for st in gen)
    c = sum(int(st.get("completion_tokens") or 0) for st in gen)
    return UsageOut(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _eap(res: chat_case.ChatResult) -> EapOut:
    d = res.as_dict()
    return EapOut(citations=d["citations"], conversation_id=res.conversation_id, message_id=res.message_id,
                  trace_id=res.trace_id, model=res.model, specialist=res.specialist, model_tier=res.model_tier,
                  outcome=res.outcome, ai_disclosure=res.ai_disclosure, retrieval_notes=res.retrieval_notes)


def _complete(principal: Principal, body: CompletionIn, model: Model, question: str,
              specialist: str | None) -> CompletionOut:
    res = chat_case.ask(_open_deps(principal, model), question, body.eap.conversation_id, k=body.eap.k,
                        channel="openai", specialist=specialist, tier=_tier(body))
    return CompletionOut(id=f"chatcmpl-{res.message_id}", created=int(time.time()), model=body.model,
                         choices=[ChoiceOut(message=MessageOut(content=res.answer))], usage=_usage(res), eap=_eap(res))


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    payload = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(payload, default=str)}\n\n"


async def _stream(principal: Principal, body: CompletionIn, model: Model, question: str,
                  specialist: str | None) -> AsyncIterator[str]:
    cid = f"chatcmpl-{uuid.uuid4()}"
    yield _chunk(cid, body.model, {"role": "assistant", "content": ""})
    relay = chat_case.stream_answer(_open_deps(principal, model), question, body.eap.conversation_id, k=body.eap.k,
                                    channel="openai", policy=chat_case.HOLD, specialist=specialist,
                                    tier=_tier(body))
    finished = False
    try:
        while True:
            kind, data = await run_in_threadpool(relay.events.get)
            if kind == "delta":
                yield _chunk(cid, body.model, {"content": data})
            elif kind == "result":
                finished = True
                yield _chunk(cid, body.model, {}, "stop", usage=_usage(data).model_dump(),
                             eap=_eap(data).model_dump(mode="json"))
                break
            elif kind == "error":
                finished = True
                exc = data if isinstance(data, PlatformError) else None
                err = error_body(exc.code, exc.message, exc.details)["error"] if exc else error_body(
                    "internal_error", "internal server error")["error"]
                yield f"data: {json.dumps({'error': err})}\n\n"
                break
    finally:
        if not finished:
            relay.disconnected.set()
    yield "data: [DONE]\n\n"


@router.post("/chat/completions", response_model=CompletionOut, dependencies=[RateLimit],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "A chat.completion, or with `stream: true` chat.completion.chunk "
                                             "events ending with data: [DONE]"}})
async def chat_completions(body: CompletionIn, principal: PrincipalDep, model: ModelDep) -> Any:
    """OpenAI's chat completion, answered by the platform's chat use case (grounded, cited, verified)."""
    question, specialist = _question(body)
    tier = _tier(body)
    if body.eap.conversation_id is not None:
        await run_in_threadpool(_check_conversation, principal, body.eap.conversation_id)
    if tier is not None:  # a tier the tenant may not use is refused before a stream starts
        await run_in_threadpool(_check_tier, principal, tier)
    if body.stream:
        return StreamingResponse(_stream(principal, body, model, question, specialist), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await run_in_threadpool(_complete, principal, body, model, question, specialist)
