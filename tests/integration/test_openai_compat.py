"""The OpenAI-compatible API (serving/routes/openai_compat.py) driven by the official `openai` SDK against the
app on a real uvicorn server on loopback: models, plain and streamed completions through the chat use case
(citations in the `eap` extension, the stored message, the audit record), errors, and access control."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.models import Role
from tests.builders import RECIPE, bearer, new_plant


@pytest.fixture(scope="module")
def plant(platform_db):
    return new_plant("oai")


def _client(url: str, t, user: str, role=None, groups=()):
    import openai

    token = bearer(t, user, role, groups)["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=120)


def _audit(t, user: str) -> list[dict]:
    from core.db.database import tenant_session

    with tenant_session(t.id) as s:
        return [dict(r) for r in s.execute(text("SELECT action, details FROM audit_events WHERE actor = :u AND "
                                                "action = 'chat' ORDER BY seq"), {"u": user}).mappings()]


def test_models_are_auto_and_the_specialists(live_server, plant):
    from agents.specialists import SPECIALISTS

    _, url = live_server
    ids = [m.id for m in _client(url, plant, "lister").models.list()]
    assert ids[0] == "auto" and sorted(ids[1:]) == sorted(SPECIALISTS)


def test_a_request_without_a_platform_token_is_refused(live_server, plant):
    import openai

    _, url = live_server
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="not-a-platform-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "oil of press P3?"}])


def test_completion_goes_through_the_chat_use_case(live_server, plant):
    _, url = live_server
    c = _client(url, plant, "oai-plain", groups=("qa",))
    r = c.chat.completions.create(model="auto", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "How often must the hydraulic oil of press P3 be changed?"}])
    answer = r.choices[0].message.content
    assert "4000" in answer and r.choices[0].finish_reason == "stop"
    eap = r.model_extra["eap"]
    assert eap["citations"] and eap["citations"][0]["title"] == "P3 manual"
    assert eap["outcome"] in ("verified", "abstained") and eap["ai_disclosure"]
    assert r.usage.completion_tokens > 0
    [rec] = _audit(plant, "oai-plain")
    assert rec["details"]["channel"] == "openai"
    assert rec["details"]["cited_chunk_ids"] == [c_["chunk_id"] for c_ in eap["citations"]]


def test_streamed_completion_matches_the_stored_message(live_server, plant):
    _, url = live_server
    c = _client(url, plant, "oai-stream", groups=("qa",))
    chunks = list(c.chat.completions.create(model="procedure_expert", stream=True, messages=[
        {"role": "user", "content": "How often must the hydraulic oil of press P3 be changed?"}]))
    text_ = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 3  # streamed in pieces
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    eap = last.model_extra["eap"]
    assert eap["specialist"] == "procedure_expert"  # the model name chose the specialist
    import httpx

    hist = httpx.get(f"{url}/v1/conversations/{eap['conversation_id']}",
                     headers=bearer(plant, "oai-stream", groups=("qa",))).json()
    assert hist["messages"][-1]["content"] == text_ and hist["messages"][-1]["id"] == eap["message_id"]
    [rec] = _audit(plant, "oai-stream")
    assert rec["details"]["channel"] == "openai" and rec["details"]["streamed"] is True


def test_unknown_model_and_empty_messages_are_clear_4xx(live_server, plant):
    import openai

    _, url = live_server
    c = _client(url, plant, "oai-bad")
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.chat.completions.create(model="auto", messages=[{"role": "system", "content": "only a system message"}])
    assert e.value.body["code"] == "no_user_message"


@pytest.mark.parametrize("stream", [False, True])
def test_a_viewer_never_receives_class_iii_text(live_server, plant, stream):
    _, url = live_server
    question = "What is the heat treatment recipe HT-5 for the housings: temperature and duration?"
    secret = RECIPE.split(":")[1][:40].strip()  # "anneal the housings at 540 C for four hours"

    def ask(user, role, groups):
        """(the whole wire payload, the answer text joined from the deltas when streaming)"""
        c = _client(url, plant, user, role, groups)
        if not stream:
            r = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": question}])
            return r.model_dump_json(), r.choices[0].message.content or ""
        chunks = list(c.chat.completions.create(
            model="auto", stream=True, messages=[{"role": "user", "content": question}]))
        return ("".join(ch.model_dump_json() for ch in chunks),
                "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices))

    # The control: an operator of the recipe's group gets it, so the question does reach it.
    assert "540 C" in ask(f"qa-op-{stream}", Role.operator, ("qa",))[1]
    payload, answer = ask(f"viewer-{stream}", Role.viewer, ("qa",))
    # "540 C", not the bare digits: those also turn up in ids and timings.
    for seen in (payload, answer):
        assert secret not in seen and "540 C" not in seen and "HT-5 recipe" not in seen
