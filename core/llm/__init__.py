"""The model seam (`Model`), its LiteLLM implementation, the extractive responder and the test double
(`core.llm.testing`). The functions below are the default model's, for callers without AgentDeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.llm.litellm_model import LiteLLMModel, ModelRequestsBlocked, is_extractive, model_name
from core.llm.model import Completion, LLMUnavailable, Model

__all__ = ["EXTRACTIVE_MODEL", "Completion", "LLMUnavailable", "LiteLLMModel", "Model", "ModelRequestsBlocked",
           "complete", "default_model", "is_extractive", "model_name", "stream"]

_DEFAULT = LiteLLMModel()


def default_model() -> Model:
    return _DEFAULT


def complete(messages: list[dict[str, Any]], *, model: str | None = None,
             tools: list[dict[str, Any]] | None = None) -> Completion:
    return _DEFAULT.complete(messages, model=model, tools=tools)


def stream(messages: list[dict[str, Any]], *, model: str | None = None) -> Iterator[str]:
    return _DEFAULT.stream(messages, model=model)
