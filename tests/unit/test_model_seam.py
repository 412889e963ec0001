"""The Model seam: the suite-wide guard against unscripted model-server calls, and the scripted double."""

from __future__ import annotations

import pytest

from core.llm import LiteLLMModel, Model, ModelRequestsBlocked
from core.llm.extractive import MODEL as EXTRACTIVE_MODEL
from core.llm.testing import ScriptedModel


def test_an_unscripted_model_server_call_fails_the_test(blocked_model_requests):
    with pytest.raises(ModelRequestsBlocked):
        LiteLLMModel().complete([{"role": "user", "content": "hello"}], model="openai/eap-light")
    with pytest.raises(ModelRequestsBlocked):
        list(LiteLLMModel().stream([{"role": "user", "content": "hello"}], model="openai/eap-light"))
    assert blocked_model_requests == ["openai/eap-light", "openai/eap-light"]  # the suite fails such a test
    blocked_model_requests.clear()


def test_the_scripted_double_answers_in_order_through_litellm(blocked_model_requests):
    replies: list = ["first [1]", {"tool_calls": [{"name": "calculations", "arguments": {"request": "2+2"}}]}]
    m = ScriptedModel(replies)
    assert isinstance(m, Model)
    assert m.generative(EXTRACTIVE_MODEL) and not m.concurrent_ok("openai/eap-light")  # replies pending
    c = m.complete([{"role": "user", "content": "q"}], model="openai/eap-light")
    assert (c.text, c.model) == ("first [1]", "openai/eap-light")
    c = m.complete([{"role": "user", "content": "q"}], model="openai/eap-light", tools=[])
    assert c.tool_calls and c.tool_calls[0]["name"] == "calculations" and '"2+2"' in c.tool_calls[0]["arguments"]
    assert replies == [] and [r["scripted"] for r in m.requests] == [True, True]
    # Script used up: it behaves as the model behind it (the extractive responder is not generative).
    assert not m.generative(EXTRACTIVE_MODEL) and m.generative("openai/eap-light")
    with pytest.raises(ModelRequestsBlocked):
        m.complete([{"role": "user", "content": "q"}], model="openai/eap-light")
    blocked_model_requests.clear()


def test_the_model_decides_whether_calls_run_side_by_side():
    real = LiteLLMModel()
    assert not real.concurrent_ok(EXTRACTIVE_MODEL) and real.concurrent_ok("openai/eap-light")
    assert not real.generative(EXTRACTIVE_MODEL) and real.generative("openai/eap-light")
    assert ScriptedModel(concurrent=True).concurrent_ok(EXTRACTIVE_MODEL)
