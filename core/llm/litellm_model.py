"""The LiteLLM implementation of the Model seam: every real model call goes through it.

Default (no model server configured): the grounded extractive responder, registered as the
LiteLLM custom provider `eap-extractive`. Otherwise any LiteLLM model string, e.g.
`openai/qwen2.5-7b-instruct` against a LiteLLM proxy or vLLM (`EAP_LLM_API_BASE`), or
`ollama/llama3.2` — see deploy/litellm_config.yaml for the on-prem production set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.llm.extractive import PROVIDER, build_handler
from core.llm.model import FAILURE_LISTENERS, Completion, LLMUnavailable
from core.prompt import wire
from core.settings import get_settings

_lock = threading.Lock()
_registered = False

# The suite sets this to False (tests/conftest.py): a call to a model server that a test did not
# script fails the test instead of reaching out. The extractive responder is local and always allowed.
ALLOW_MODEL_REQUESTS = True
# Every blocked call, so the suite can fail a test even when the code under test swallowed the error.
BLOCKED_REQUESTS: list[str] = []


class ModelRequestsBlocked(RuntimeError):
    """A model-server call while `ALLOW_MODEL_REQUESTS` is False."""


def _litellm() -> Any:
    global _registered
    # LiteLLM fetches a model cost map from the internet at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Its aiohttp transport raises in __del__ at interpreter exit; httpx is enough for on-prem calls.
    os.environ.setdefault("DISABLE_AIOHTTP_TRANSPORT", "True")
    import litellm

    with _lock:
        if not _registered:
            litellm.custom_provider_map = [
                *[p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER],
                {"provider": PROVIDER, "custom_handler": build_handler()},
            ]
            litellm.telemetry = False
            litellm.suppress_debug_info = True
            _registered = True
    return litellm


def failed(model: str, exc: Exception) -> LLMUnavailable:
    """Every failed model call is an audit record (the error class, not the message: a provider's
    message can echo the prompt, i.e. document text)."""
    for listener in FAILURE_LISTENERS:
        listener(model, exc)
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return LLMUnavailable(f"model {model} failed: {first}")


def model_name() -> str:
    return get_settings().llm_model or EXTRACTIVE_MODEL


def is_extractive(model: str | None = None) -> bool:
    return (model or model_name()).startswith(PROVIDER + "/")


def request_kwargs(model: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The keyword arguments of one `litellm.completion` call to `model`, unless model requests are blocked."""
    if not ALLOW_MODEL_REQUESTS and not is_extractive(model):
        BLOCKED_REQUESTS.append(model)
        raise ModelRequestsBlocked(f"model requests are blocked here; script the reply of {model} with "
                                   "core.llm.testing.ScriptedModel")
    return call_kwargs(model, tools)


def call_kwargs(model: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Endpoint, key, timeout and tools of one `litellm.completion` call to `model`."""
    s = get_settings()
    kw: dict[str, Any] = {"model": model, "timeout": s.llm_timeout_s}
    if not is_extractive(model):
        if s.llm_api_base:
            kw["api_base"] = s.llm_api_base
        kw["api_key"] = s.llm_api_key.get_secret_value() if s.llm_api_key else "EMPTY"
        kw["temperature"] = 0.1
        if tools:
            kw["tools"] = tools
    return kw


def wire_messages(messages: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The in-process extractive responder reads the typed prompt (`core.prompt.Prompt`) that travels with
    the system message; a model server gets text only."""
    return messages if is_extractive(model) else wire(messages)


def completion_of(resp: Any, model: str, t0: float) -> Completion:
    usage = getattr(resp, "usage", None)
    msg = resp.choices[0].message
    calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments or "{}"}
             for tc in (getattr(msg, "tool_calls", None) or [])]
    return Completion(
        text=msg.content or "",
        model=model,
        latency_ms=(time.perf_counter() - t0) * 1000,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        tool_calls=calls or None,
    )


def streamed_completion(chunks: Any, messages: list[dict[str, Any]], model: str, t0: float,
                        on_delta: Callable[[str], None]) -> Completion:
    """Relay each content delta of a streamed response to `on_delta` as it arrives, then rebuild the whole
    response (text, tool calls, and the server's usage when it sent one) with LiteLLM's chunk builder."""
    litellm = _litellm()
    got: list[Any] = []
    for chunk in chunks:
        got.append(chunk)
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            on_delta(delta)
    if not got:
        raise RuntimeError("the model server closed the stream without a reply")
    resp = litellm.stream_chunk_builder(got, messages=messages)
    if resp is None:
        raise RuntimeError("the streamed reply could not be assembled")
    return completion_of(resp, model, t0)


def deltas(chunks: Any) -> Iterator[str]:
    for chunk in chunks:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            yield delta


class LiteLLMModel:
    """The production Model: LiteLLM for every call, the extractive responder by default."""

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Completion:
        litellm = _litellm()
        model = model or model_name()
        t0 = time.perf_counter()
        kwargs = request_kwargs(model, tools)
        try:
            resp = litellm.completion(messages=wire_messages(messages, model), **kwargs)
        except Exception as exc:  # noqa: BLE001 - provider errors vary; one clear line for the caller
            raise failed(model, exc) from None
        return completion_of(resp, model, t0)

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None) -> Iterator[str]:
        litellm = _litellm()
        model = model or model_name()
        kwargs = request_kwargs(model)
        try:
            yield from deltas(litellm.completion(messages=wire_messages(messages, model), stream=True, **kwargs))
        except Exception as exc:  # noqa: BLE001
            raise failed(model, exc) from None

    def stream_complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                        tools: list[dict[str, Any]] | None = None,
                        on_delta: Callable[[str], None]) -> Completion:
        """`complete`, streamed: each text delta goes to `on_delta` as the model produces it; the returned
        Completion is the whole reply, with the server's token usage (`stream_options.include_usage`)."""
        litellm = _litellm()
        model = model or model_name()
        t0 = time.perf_counter()
        kwargs = request_kwargs(model, tools)
        if not is_extractive(model):
            kwargs["stream_options"] = {"include_usage": True}
        wired = wire_messages(messages, model)
        try:
            return streamed_completion(litellm.completion(messages=wired, stream=True, **kwargs), wired, model, t0,
                                       on_delta)
        except Exception as exc:  # noqa: BLE001 - a server dying mid-stream fails like any other call
            raise failed(model, exc) from None

    def generative(self, model: str) -> bool:
        return not is_extractive(model)

    def concurrent_ok(self, model: str) -> bool:
        # The extractive responder is CPU-bound: threads would only contend for the cores.
        return not is_extractive(model)
