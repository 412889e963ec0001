"""The chat use case: one question from `POST /v1/chat` (JSON or SSE) or `eap ask`, the same path for both.

Two transactions, each owned by the edge that calls (it passes AgentDeps on its Session, agents/deps.py):
1. `answer`: open or continue the caller's conversation, store the question, run the orchestrator with
   the history the caller may read now (OBSERVE → THINK → VERIFY; PII is sanitised when Class III/IV
   sources are cited) → `Pending`. The question is committed with it.
2. `store`: store the answer with the access label of everything its run saw (agents/answer_access.py),
   LEARN, record the run, and audit it — one `chat` record (question hash, cited and retrieved chunks,
   model, latency, tools) and one `chunk.access` record per Class III/IV chunk the model saw → `ChatResult`.
`ask` runs both for edges that do not stream.

Streaming (`answer(..., sink=Relay(...))`): the model's answer drafts reach the sink while they are produced
(core/llm/streaming.py); VERIFY runs on each finished draft; the `Relay` turns them into stream events under
the caller's live policy (`live_policy`): a draft that a later one replaces (an escalation, a fallback) is
retracted, and when the final answer differs from what was shown the shown text is replaced. The stored
message is always the final, verified answer (`Pending.outcome.text`), never the streamed draft.

Fallback: when the model server fails (LLMUnavailable, e.g. it died mid-stream), the question is answered
again by the extractive responder, the answer says so in its retrieval notes and the audit record carries
`fallback` (the failed call itself is audited by compliance.audit's failure listener).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import hashlib
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from agents import answer_access, export_guard, history, learning, orchestrator
from agents.answer import AI_DISCLOSURE, Citation
from agents.deps import AgentDeps
from agents.operational import RecordCitation
from agents.trace import UNSET
from compliance import audit, export_control
from compliance.access import ceiling
from compliance.classification import CLASS_NAMES
from core import llm
from core.errors import InvalidInput
from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.llm.streaming import StreamingModel, TokenSink
from core.models import Conversation, Message

__all__ = ["AI_DISCLOSURE", "HOLD", "SENTENCES", "TOKENS", "ChatResult", "Pending", "Relay", "answer", "ask",
           "check_conversation", "extractive_deps", "live_policy", "start_model", "store", "stream_answer"]


@dataclass(frozen=True)
class Pending:
    """An answered question whose answer is not stored yet (`store` does that)."""

    conversation_id: uuid.UUID
    question: str
    outcome: orchestrator.Outcome
    latency_ms: float  # opening the conversation to the verified answer
    fallback: str | None = None  # why the extractive responder answered instead of the configured model


class CitationView(BaseModel):
    """A citation as the API and `eap ask --json` show it: a document passage (kind "document"), a system
    record (kind "record"), a SQL Guard query (kind "query") or a calculation (kind "calculation")."""

    n: int
    kind: Literal["document", "record", "query", "calculation"] = "document"
    title: str
    document_id: uuid.UUID | None = None
    chunk_id: uuid.UUID | None = None
    page: int | None = None
    section: str | None = None
    score: float | None = None
    system: str | None = None
    entity: str | None = None
    key: str | None = None
    as_of: dt.datetime | None = None
    source: Literal["live", "extract"] | None = None
    # kind "query" (SQL Guard over the reporting views): the validated SQL, its row count, who wrote it.
    query: str | None = None
    rows: int | None = None
    author: str | None = None
    refused: str | None = None
    # kind "calculation" (the calculator): the formula, its inputs and result.
    formula: str | None = None
    inputs: list[Any] | None = None
    result: Any | None = None


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
    trace: list[dict[str, Any]]
    ai_disclosure: str
    retrieval_notes: list[str]
    index_version: int | None = None  # the search index version the answer's sources came from
    # A thinking tool's output (Council / RedTeam / FirstPrinciples) for a collapsible reasoning
    # section; null for answers that used none.
    reasoning: dict[str, Any] | None = None

    # SAP/MES records the answer cites (agents/operational.py); `as_dict` lists them with the citations.
    records: list[RecordCitation] = Field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the shape of `POST /v1/chat`'s answer (`eap ask --json` prints it)."""
        cited = [c.as_dict() for c in self.citations] + [r.as_dict() for r in self.records]
        return {**self.model_dump(mode="json", exclude={"citations", "records"}),
                "citations": [CitationView.model_validate(c).model_dump(mode="json") for c in cited]}


def start_model() -> str:
    """The model named before an answer exists (the SSE `start` event)."""
    return llm.model_name()


def check_conversation(session: Session, asker: history.Asker, conversation_id: uuid.UUID) -> None:
    """Raise NotFound unless the caller may continue this conversation (before a stream starts)."""
    history.conversation(session, asker, conversation_id)


def answer(deps: AgentDeps, question: str, conversation_id: uuid.UUID | None = None, *, k: int = 6,
           sink: TokenSink | None = None, specialist: str | None = None, tier: str | None = None) -> Pending:
    """Open (or continue) the caller's conversation, store the question and answer it. With a `sink`, the
    answer drafts are relayed to it while the model writes them. `tier`: the model tier the client asked for
    (refused or downgraded by the tenant's tier policy: orchestrator.run)."""
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
    run_deps = deps if sink is None else dataclasses.replace(deps, model=StreamingModel(deps.model, sink))
    fallback = None
    try:
        out = orchestrator.run(run_deps, question, turns, k=k, specialist=specialist, tier=tier)
    except llm.LLMUnavailable as exc:
        # The model server failed (refused, timed out, died mid-stream): the user still gets a grounded answer.
        fallback = exc.message[:300]
        out = orchestrator.run(extractive_deps(run_deps), question, turns, k=k, specialist=specialist, tier=tier)
        out.prepared.retrieval_notes.append(
            "The generative model was unavailable; this answer was written by the extractive responder.")
    export_guard.apply(deps, out)  # every edge (JSON, SSE, CLI) streams or stores only what the guard passed
    return Pending(conv.id, question, out, (time.perf_counter() - t0) * 1000, fallback)


def extractive_deps(deps: AgentDeps) -> AgentDeps:
    """The same request with every tier on the extractive responder and no model-side classification."""
    settings = deps.settings.model_copy(update={
        "llm_model": EXTRACTIVE_MODEL, "llm_model_light": EXTRACTIVE_MODEL, "llm_model_standard": EXTRACTIVE_MODEL,
        "llm_model_heavy": EXTRACTIVE_MODEL, "llm_routing": False, "llm_memory_extraction": False})
    return dataclasses.replace(deps, settings=settings)


# Live policies of a stream (`live_policy`): what of a draft a client may see before VERIFY and the guards.
TOKENS, SENTENCES, HOLD = "tokens", "sentences", "hold"
_SENTENCE_END = re.compile(r"[.!?:;](?:\s*\[\d+\])*\s+|\n")


def live_policy(deps: AgentDeps) -> str:
    """TOKENS: drafts stream token by token. SENTENCES: a caller who is not export-cleared sees a draft one
    complete sentence at a time, and nothing more of it once a sentence names an export-control term (the
    export guard removes such statements from the final answer). HOLD: nothing before the final answer —
    when `EAP_STREAM_HOLD_CLASSIFIED` is on and the caller's role may read Class III/IV (the sources are only
    known inside the run), or when a caller who is not cleared may meet export-controlled documents (the guard
    also removes statements that cite them, which no sentence check can see)."""
    if deps.settings.stream_hold_classified and ceiling(deps.caller.role) >= 3:
        return HOLD
    if export_control.is_cleared(deps.caller.groups, deps.settings.export_cleared_groups):
        return TOKENS
    controlled = deps.session.execute(text(
        "SELECT EXISTS (SELECT 1 FROM documents WHERE classification_reasons @> CAST(:probe AS jsonb))"),
        {"probe": '[{"detector": "export_control"}]'}).scalar()
    return HOLD if controlled else SENTENCES


class Relay:
    """The TokenSink of a streaming edge: answer drafts become events on `events` under a live policy —
    ("delta", text), ("retract", {...}) when a new draft starts after text of the previous one was shown, and,
    from `finish(final)`, what turns the shown text into the final answer: more deltas when the final answer
    extends it, else ("replace", {"text": final}). One producer (the run), one consumer (the edge)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.shown = ""  # of the current draft, what the client has seen
        self.pending = ""  # of the current draft, what it has not
        self.stopped = False
        self.drafts = 0
        self.disconnected = threading.Event()  # set by the edge when its client went away

    def begin(self, model: str) -> None:
        if self.shown:
            self.events.put(("retract", {"draft": self.drafts, "chars": len(self.shown), "next_model": model,
                                         "reason": "a new draft replaces this one (VERIFY rejected it or the "
                                                   "model call failed)"}))
        self.drafts += 1
        self.shown, self.pending, self.stopped = "", "", False

    def delta(self, piece: str) -> None:
        if self.policy == TOKENS and not self.stopped:
            self._show(piece)
            return
        self.pending += piece
        if self.policy != SENTENCES or self.stopped:
            return
        ends = list(_SENTENCE_END.finditer(self.pending))
        if not ends:
            return
        ready, self.pending = self.pending[:ends[-1].end()], self.pending[ends[-1].end():]
        if export_control.terms_in(ready):
            self.stopped = True  # the export guard decides on this draft; the final answer follows
            return
        self._show(ready)

    def _show(self, piece: str) -> None:
        self.shown += piece
        self.events.put(("delta", piece))

    def finish(self, final: str, outcome: str) -> None:
        """Bring the client from what it was shown to `final`, the verified answer that is stored."""
        if self.shown and final.startswith(self.shown):
            for word in _WORDS.findall(final[len(self.shown):]):
                self.events.put(("delta", word))
        elif self.shown:
            self.events.put(("replace", {"text": final, "outcome": outcome,
                                         "reason": "the verified answer differs from the streamed draft"}))
        else:
            for word in _WORDS.findall(final):
                self.events.put(("delta", word))
        self.shown = final


_WORDS = re.compile(r"\s*\S+\s*")  # leading whitespace too: a remainder may start with "\n\n"


def store(deps: AgentDeps, pending: Pending, *, streamed: bool = False, channel: str = "api",
          client_disconnected: bool = False) -> ChatResult:
    """Store the answer, LEARN, record the run and audit it. `channel` ("api", "cli", "openai", "mcp") is
    recorded in the audit record; everything else is the same whichever edge asked. A streaming edge stores
    the answer even when its client went away mid-stream (`client_disconnected`, recorded too)."""
    session, asker, tenant_id = deps.session, deps.caller, _tenant(deps)
    out, conv_id, msg_id = pending.outcome, pending.conversation_id, uuid.uuid4()
    session.add(Message(id=msg_id, tenant_id=tenant_id, conversation_id=conv_id, role="assistant",
                        content=out.text, citations=[c.as_dict() for c in out.citations]
                        + [r.as_dict() for r in out.records], model=out.model,
                        specialist=out.specialist, index_version=out.prepared.index_version,
                        access=answer_access.label_for_outcome(session, out),
                        metadata_={"latency_ms": round(pending.latency_ms, 1), "ai_disclosure": AI_DISCLOSURE,
                                   "model_tier": out.tier, "outcome": out.outcome, "composition": out.composition,
                                   "reasoning": out.reasoning}))
    session.execute(update(Conversation).where(Conversation.id == conv_id).values(updated_at=dt.datetime.now(dt.UTC)))
    # LEARN (memories, goal progress, lesson) in the same transaction; it annotates the trace's LEARN step.
    learning.after_answer(deps, pending.question, out, conv_id, msg_id)
    run_id = orchestrator.record(session, tenant_id, asker.subject, out, conv_id, msg_id, settings=deps.settings)
    _audit(deps, pending, msg_id, run_id, streamed=streamed, channel=channel, client_disconnected=client_disconnected)
    return ChatResult(answer=out.text, citations=out.citations, conversation_id=conv_id, message_id=msg_id,
                      model=out.model, specialist=out.specialist, model_tier=out.tier, outcome=out.outcome,
                      trace_id=run_id, trace=out.trace, ai_disclosure=AI_DISCLOSURE,
                      retrieval_notes=out.prepared.retrieval_notes, index_version=out.prepared.index_version,
                      reasoning=out.reasoning, records=out.records)


def ask(open_deps: Callable[[], AbstractContextManager[AgentDeps]], question: str,
        conversation_id: uuid.UUID | None = None, *, k: int = 6, channel: str = "api",
        specialist: str | None = None, tier: str | None = None) -> ChatResult:
    """`answer` then `store`, each in a transaction of its own: `open_deps()` opens one for the caller's
    tenant and yields the AgentDeps on it."""
    with open_deps() as deps:
        pending = answer(deps, question, conversation_id, k=k, specialist=specialist, tier=tier)
    with open_deps() as deps:
        return store(deps, pending, streamed=False, channel=channel)


def _tenant(deps: AgentDeps) -> uuid.UUID:
    if deps.tenant_id is None:
        raise InvalidInput("a chat needs a tenant: conversations and audit records belong to one")
    return deps.tenant_id


def _audit(deps: AgentDeps, pending: Pending, msg_id: uuid.UUID, run_id: uuid.UUID, *, streamed: bool,
           channel: str, client_disconnected: bool = False) -> None:
    session, tenant_id, out = deps.session, _tenant(deps), pending.outcome
    actor, role = deps.caller.subject, deps.caller.role
    hits = out.prepared.hits
    # Only when they happened: the records of a streamed and a plain answer stay alike otherwise.
    extra: dict[str, Any] = {}
    if pending.fallback:
        extra["fallback"] = {"to": EXTRACTIVE_MODEL, "because": pending.fallback}
    if client_disconnected:
        extra["client_disconnected"] = True
    if out.records:  # the SAP/MES records the answer cites (system, entity, key)
        extra["cited_records"] = [f"{r.record.system}:{r.record.entity}:{r.record.key}" for r in out.records]
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
                                         for st in out.steps.skills], **extra})
    for h in hits:  # the model saw these: each Class III/IV chunk is its own record
        if h.classification >= 3:
            audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=role,
                         action="chunk.access", resource_type="chunk", resource_id=str(h.chunk_id),
                         details={"document_id": str(h.document_id), "class": CLASS_NAMES[h.classification],
                                  "via": "chat", "message_id": str(msg_id)})


def stream_answer(open_deps: Callable[[], AbstractContextManager[AgentDeps]], question: str,
                  conversation_id: uuid.UUID | None = None, *, k: int = 6, channel: str = "api",
                  policy: str | None = None, specialist: str | None = None, tier: str | None = None) -> Relay:
    """`answer` then `store` in a worker thread, relayed as events on the returned Relay's queue, ending with
    ("result", ChatResult) or ("error", exception). The worker finishes — the answer stored, usage and the
    audit record written — even when the client that asked has gone away: the edge sets `relay.disconnected`
    then, and the audit record says so. `policy` overrides the caller's live policy (HOLD for clients that
    cannot retract text)."""
    relay = Relay(policy or HOLD)

    def work() -> None:
        try:
            with open_deps() as deps:
                relay.policy = policy or live_policy(deps)
                pending = answer(deps, question, conversation_id, k=k, sink=relay, specialist=specialist, tier=tier)
            relay.finish(pending.outcome.text, pending.outcome.outcome)
            with open_deps() as deps:
                res = store(deps, pending, streamed=True, channel=channel,
                            client_disconnected=relay.disconnected.is_set())
        except Exception as exc:  # noqa: BLE001 - handed to the edge, which turns it into an error event
            relay.events.put(("error", exc))
            return
        relay.events.put(("result", res))

    # The caller's context (the audit actor bound for this request) goes with the work.
    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(work,), name="chat-stream", daemon=True).start()
    return relay
