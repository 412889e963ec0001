"""Live token streaming through the Model seam.

`StreamingModel(inner, sink)` is a Model that relays the text of every *answer draft* to a `TokenSink`
while the model produces it, and otherwise behaves exactly like `inner`. An answer draft is a call that
offers tools: the orchestrator's generation step always offers the caller's skills as tools (possibly none),
while its classification calls (LLM routing, the composition classifier, memory extraction, thinking-tool
prompts) offer none and are never shown to the user. Each draft starts with `sink.begin(model)`; a draft
that VERIFY later rejects is retracted by the edge (see agents/chat.py), never by this module.

A Model without `stream_complete` (an implementation that cannot stream) still works: its whole reply is
delivered as one delta once it is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from core.llm.model import Completion, Model

__all__ = ["StreamingModel", "TokenSink", "stream_complete"]


class TokenSink(Protocol):
    def begin(self, model: str) -> None:
        """A new answer draft starts (a retry or an escalation after a rejected draft starts another)."""
        ...

    def delta(self, text: str) -> None:
        """The next piece of the current draft, as the model produced it."""
        ...


def stream_complete(lm: Model, messages: list[dict[str, Any]], *, model: str | None,
                    tools: list[dict[str, Any]] | None, on_delta: Callable[[str], None]) -> Completion:
    """`lm.stream_complete` when `lm` can stream, else `lm.complete` delivered as one delta."""
    streamer = getattr(lm, "stream_complete", None)
    if streamer is not None:
        c: Completion = streamer(messages, model=model, tools=tools, on_delta=on_delta)
        return c
    c = lm.complete(messages, model=model, tools=tools)
    if c.text:
        on_delta(c.text)
    return c


class StreamingModel:
    """`inner`, with the text of every answer draft relayed to `sink` as it is produced."""

    def __init__(self, inner: Model, sink: TokenSink) -> None:
        self.inner = inner
        self.sink = sink

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Completion:
        if tools is None:  # a classification call: not part of the answer
            return self.inner.complete(messages, model=model, tools=tools)
        from core.llm.litellm_model import model_name

        self.sink.begin(model or model_name())
        return stream_complete(self.inner, messages, model=model, tools=tools, on_delta=self.sink.delta)

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None) -> Iterator[str]:
        return self.inner.stream(messages, model=model)

    def generative(self, model: str) -> bool:
        return self.inner.generative(model)

    def concurrent_ok(self, model: str) -> bool:
        # One stream shows one draft at a time: branches of a fan-out run in sequence while streaming.
        return False
