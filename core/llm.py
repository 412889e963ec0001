"""The one seam every model call goes through: LiteLLM.

Default (no model server configured): the grounded extractive responder, registered as the
LiteLLM custom provider `eap-extractive`. Otherwise any LiteLLM model string, e.g.
`openai/qwen2.5-7b-instruct` against a LiteLLM proxy or vLLM (`EAP_LLM_API_BASE`), or
`ollama/llama3.2` — see deploy/litellm_config.yaml for the on-prem production set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from core.errors import PlatformError
from core.extractive import MODEL as EXTRACTIVE_MODEL
from core.extractive import PROVIDER, build_handler
from core.prompt import wire
from core.settings import get_settings

_lock = threading.Lock()
_registered = False


class LLMUnavailable(PlatformError):
    code = "llm_unavailable"
    status_code = 502


def _litellm():
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


@dataclass
class Completion:
    text: str
    model: str
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict] | None = None  # [{"id", "name", "arguments"}] when the model asked for tools


def _failed(model: str, exc: Exception) -> LLMUnavailable:
    """Every failed model call is an audit record (the error class, not the message: a provider's
    message can echo the prompt, i.e. document text)."""
    from core import audit

    audit.record_failure("model.call.failed", resource_type="model", resource_id=model,
                         details={"error": type(exc).__name__})
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return LLMUnavailable(f"model {model} failed: {first}")


def model_name() -> str:
    return get_settings().llm_model or EXTRACTIVE_MODEL


def is_extractive(model: str | None = None) -> bool:
    return (model or model_name()).startswith(PROVIDER + "/")


def _kwargs(model: str, mock_response: str | None) -> dict:
    s = get_settings()
    kw: dict = {"model": model, "timeout": s.llm_timeout_s}
    if not is_extractive(model):
        if s.llm_api_base:
            kw["api_base"] = s.llm_api_base
        kw["api_key"] = s.llm_api_key.get_secret_value() if s.llm_api_key else "EMPTY"
        kw["temperature"] = 0.1
    if mock_response is not None:
        kw["mock_response"] = mock_response  # tests script replies through the same seam
    return kw


def _messages(messages: list[dict], model: str) -> list[dict]:
    """The in-process extractive responder reads the typed prompt (`core.prompt.Prompt`) that travels with
    the system message; a model server gets text only."""
    return messages if is_extractive(model) else wire(messages)


def complete(messages: list[dict], *, model: str | None = None, mock_response: str | None = None,
             tools: list[dict] | None = None, mock_tool_calls: list[dict] | None = None) -> Completion:
    litellm = _litellm()
    model = model or model_name()
    t0 = time.perf_counter()
    kwargs = _kwargs(model, mock_response)
    if tools and not is_extractive(model):
        kwargs["tools"] = tools
    if mock_tool_calls is not None:
        kwargs["mock_tool_calls"] = mock_tool_calls
        kwargs.setdefault("mock_response", "")
    try:
        resp = litellm.completion(messages=_messages(messages, model), **kwargs)
    except Exception as exc:  # noqa: BLE001 - provider errors vary; one clear line for the caller
        raise _failed(model, exc) from None
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


def stream(messages: list[dict], *, model: str | None = None, mock_response: str | None = None) -> Iterator[str]:
    litellm = _litellm()
    model = model or model_name()
    try:
        chunks = litellm.completion(messages=_messages(messages, model), stream=True, **_kwargs(model, mock_response))
        for chunk in chunks:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                yield delta
    except Exception as exc:  # noqa: BLE001
        raise _failed(model, exc) from None
