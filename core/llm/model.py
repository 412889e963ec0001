"""The Model seam: one protocol for chat completion, tool calls and streaming.

`core.llm.litellm_model.LiteLLMModel` implements it for every real call (a model server through LiteLLM,
or the in-process extractive responder registered as a LiteLLM custom provider);
`core.llm.testing.ScriptedModel` is the test double. Agents receive one through `AgentDeps.model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from core.errors import PlatformError


class LLMUnavailable(PlatformError):
    code = "llm_unavailable"
    status_code = 502


# Called with (model, exception) for every failed model call. The kernel cannot import the audit trail
# (compliance sits above it), so compliance.audit subscribes itself when it is imported — and every edge
# (API, Dagster definitions, CLI) imports it before any model call can happen.
FAILURE_LISTENERS: list[Callable[[str, Exception], None]] = []


@dataclass
class Completion:
    text: str
    model: str
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"id", "name", "arguments"}] when the model asked for tools


@runtime_checkable
class Model(Protocol):
    """`model` in each call is a model string (a tier's, e.g. `openai/qwen2.5-7b-instruct`); None means
    the configured default."""

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Completion: ...

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None) -> Iterator[str]: ...

    def generative(self, model: str) -> bool:
        """True when a call to `model` writes its own text; False for the extractive responder, which
        only quotes the sources back (so a skill's direct answer or a deterministic thinking tool can
        stand in for the call)."""
        ...

    def concurrent_ok(self, model: str) -> bool:
        """True when calls to `model` may run side by side in threads (a model server); False when
        they are local and CPU-bound (the extractive responder) or must keep their order."""
        ...
