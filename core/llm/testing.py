"""The scripted test double of the Model seam (the pattern of pydantic-ai's `TestModel`/`FunctionModel`)
and the switch of the suite-wide guard against unscripted model-server calls.

`ScriptedModel(replies)` answers successive calls with the scripted replies, in order: a string is the
reply text, `{"tool_calls": [{"name", "arguments"}]}` a reply that asks for tools. Scripted replies
go through LiteLLM's own mock path, so usage and tool calls come back exactly as from a server. When
the script is used up, calls go to the real model (the extractive responder is local; a model server
is blocked by the guard in tests). While replies are pending the double behaves as a generative,
strictly ordered model: the skill's direct answer does not stand in for it and branches run in order.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.llm import litellm_model, streaming
from core.llm.litellm_model import LiteLLMModel, call_kwargs, completion_of, deltas, wire_messages
from core.llm.model import Completion, Model


class ScriptedModel:
    def __init__(self, replies: list[Any] | None = None, fallback: Model | None = None, *,
                 concurrent: bool | None = None) -> None:
        # The list itself, not a copy: a test can check what is left of it.
        self.replies = replies if replies is not None else []
        self.fallback = fallback or LiteLLMModel()
        self.concurrent = concurrent  # force `concurrent_ok` (e.g. the threaded fan-out with the local responder)
        self.requests: list[dict[str, Any]] = []  # every call: model, messages, tools, scripted or not

    def _next(self) -> object | None:
        return self.replies.pop(0) if self.replies else None

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                 tools: list[dict[str, Any]] | None = None) -> Completion:
        reply = self._next()
        model = model or litellm_model.model_name()
        self.requests.append({"model": model, "messages": messages, "tools": tools, "scripted": reply is not None})
        if reply is None:
            return self.fallback.complete(messages, model=model, tools=tools)
        kwargs = _scripted_kwargs(model, tools)
        if isinstance(reply, dict):
            kwargs["mock_tool_calls"] = [
                {"id": tc.get("id", f"call_{i}"), "type": "function",
                 "function": {"name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))}}
                for i, tc in enumerate(reply["tool_calls"])]
            kwargs["mock_response"] = ""
        else:
            kwargs["mock_response"] = reply
        t0 = time.perf_counter()
        try:
            resp = litellm_model._litellm().completion(messages=wire_messages(messages, model), **kwargs)
        except Exception as exc:  # noqa: BLE001 - the same failure path as a real call
            raise litellm_model.failed(model, exc) from None
        return completion_of(resp, model, t0)

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None) -> Iterator[str]:
        reply = self._next()
        model = model or litellm_model.model_name()
        self.requests.append({"model": model, "messages": messages, "tools": None, "scripted": reply is not None})
        if reply is None:
            yield from self.fallback.stream(messages, model=model)
            return
        kwargs = _scripted_kwargs(model, None)
        kwargs["mock_response"] = reply
        try:
            yield from deltas(litellm_model._litellm().completion(messages=wire_messages(messages, model), stream=True,
                                                                  **kwargs))
        except Exception as exc:  # noqa: BLE001
            raise litellm_model.failed(model, exc) from None

    def stream_complete(self, messages: list[dict[str, Any]], *, model: str | None = None,
                        tools: list[dict[str, Any]] | None = None,
                        on_delta: Callable[[str], None]) -> Completion:
        """A scripted reply is delivered word by word after it is complete (the double has no server to stream
        from); an unscripted call streams from the fallback model."""
        if not self.replies:
            model = model or litellm_model.model_name()
            self.requests.append({"model": model, "messages": messages, "tools": tools, "scripted": False})
            return streaming.stream_complete(self.fallback, messages, model=model, tools=tools, on_delta=on_delta)
        c = self.complete(messages, model=model, tools=tools)
        for word in re.findall(r"\S+\s*", c.text):
            on_delta(word)
        return c

    def generative(self, model: str) -> bool:
        return bool(self.replies) or self.fallback.generative(model)

    def concurrent_ok(self, model: str) -> bool:
        if self.concurrent is not None:
            return self.concurrent
        # Scripted replies must be consumed in order.
        return not self.replies and self.fallback.concurrent_ok(model)


def _scripted_kwargs(model: str, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A real call's arguments; a scripted reply never reaches a server, so the guard does not apply."""
    return call_kwargs(model, tools)


@contextmanager
def allow_model_requests(allow: bool = True) -> Iterator[None]:
    """Within the block, model-server calls are allowed (or blocked); e.g. a test of the failure path
    against a closed loopback port."""
    before = litellm_model.ALLOW_MODEL_REQUESTS
    litellm_model.ALLOW_MODEL_REQUESTS = allow
    try:
        yield
    finally:
        litellm_model.ALLOW_MODEL_REQUESTS = before


def block_model_requests() -> None:
    """Suite-wide: any unscripted model-server call fails (tests/conftest.py)."""
    litellm_model.ALLOW_MODEL_REQUESTS = False
