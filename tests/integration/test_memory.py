"""Memory and learning through the real API (/v1/chat, /v1/feedback, /v1/memories), the orchestrator, the
Dagster maintenance asset and the real database: preferences change the prompt and the answer's form,
complaints are remembered, decay/compaction/limits hold, isolation per user and tenant, real forgetting,
and memories never carry classified content to a caller who may not read it."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import pytest
from sqlalchemy import text

from agents import learning, memory
from core.db.database import tenant_session
from core.embedding import get_embedder
from core.llm.extractive import SOURCES_START, USER_CONTEXT_START
from core.llm.testing import ScriptedModel
from core.models import Memory, Role
from core.settings import get_settings
from retrieval.search import Caller
from tests.builders import MANUAL, bearer, index_document, index_plant, post_chat, run_agent

OIL_Q = "What does the P3 manual say about the hydraulic oil of press P3?"


def _observe(body) -> dict:
    return next(s for s in body["trace"] if s["step"] == "OBSERVE")


def _learned(body) -> dict:
    return next(s for s in body["trace"] if s["step"] == "LEARN")["learned"]


def _bullets(answer: str) -> list[str]:
    return [ln for ln in answer.splitlines() if ln.startswith("- ")]


@pytest.fixture
def plant(make_tenant):
    return index_plant(make_tenant("mem"))


def test_preference_changes_prompt_and_answer_form_for_that_user_only(client, plant):
    t = plant
    baseline = post_chat(client, t, "otto", OIL_Q)
    assert len(_bullets(baseline["answer"])) >= 3  # the default form: several quoted bullets

    first = post_chat(client, t, "pia", "I prefer short answers. What caused the weld porosity on bracket BR-220?")
    learned = _learned(first)
    prefs = [m for m in learned["memories"] if m["type"] == "PREFERENCE"]
    assert prefs and prefs[0]["key"] == "answer_length" and prefs[0]["action"] == "created"

    second = post_chat(client, t, "pia", OIL_Q)  # a new conversation
    assert second["conversation_id"] != first["conversation_id"]
    obs = _observe(second)
    assert obs["preferences_applied"] == {"answer_length": "short"}
    assert prefs[0]["id"] in [m["id"] for m in obs["memories"] if m["type"] == "PREFERENCE"]
    # The answer's form changed: one short paragraph instead of bullets, and it says why.
    assert _bullets(second["answer"]) == [] and "Short answer, as you prefer" in second["answer"]
    assert 1 <= second["answer"].count("[1]") <= 2 and second["outcome"] == "verified"
    assert "HLP 46" in second["answer"] or "4000" in second["answer"]
    trace = client.get(f"/v1/traces/{second['trace_id']}", headers=bearer(t, "pia")).json()
    assert _observe(trace)["preferences_applied"] == {"answer_length": "short"}

    # The prompt itself: a delimited user-context block ahead of the sources, numbering untouched.
    with tenant_session(t.id) as s:
        pia = run_agent(s, Caller("operator"), "pia", OIL_Q, [], tenant_id=t.id)
        otto = run_agent(s, Caller("operator"), "otto", OIL_Q, [], tenant_id=t.id)
    prompt = pia.prepared.messages[0]["content"]
    assert USER_CONTEXT_START in prompt and "User context (from memory)" in prompt
    assert prompt.index("[preference answer_length=short]") < prompt.index(SOURCES_START)
    assert prompt.split(SOURCES_START, 1)[1].lstrip().startswith("[1] ")
    assert "[preference" not in otto.prepared.messages[0]["content"]  # otto's context has only his own episode

    # A question composed from several specialists keeps the preference and says so once.
    composed = post_chat(client, t, "pia", "What caused the weld porosity on bracket BR-220, and which hydraulic oil "
                                       "does press P3 use?")
    pattern = next(st for st in composed["trace"] if st["step"] == "THINK.compose")["composition"]
    assert pattern != "direct" and composed["answer"].count("Short answer, as you prefer") == 1, composed["answer"]

    # Another user of the same tenant keeps the default form.
    other = post_chat(client, t, "otto", OIL_Q)
    assert "preferences_applied" not in _observe(other)
    assert _bullets(other["answer"]) == _bullets(baseline["answer"])

    # A newer statement replaces the preference (one value per key).
    detailed = post_chat(client, t, "pia",
                         "Please give me detailed answers from now on. What caused the weld porosity?")
    assert [m["action"] for m in _learned(detailed)["memories"] if m["type"] == "PREFERENCE"] == ["replaced"]
    prefs = client.get("/v1/memories?type=PREFERENCE", headers=bearer(t, "pia")).json()
    assert prefs["total"] == 1 and "detailed" in prefs["items"][0]["content"]
    assert len(_bullets(post_chat(client, t, "pia", OIL_Q)["answer"])) >= 3


def test_thumbs_down_with_comment_becomes_a_recalled_memory(client, plant):
    t = plant
    ans = post_chat(client, t, "ron", OIL_Q)
    r = client.post("/v1/feedback", json={"message_id": ans["message_id"], "rating": "down",
                                          "comment": "It ignored that our press P3 was converted to HLP 68 oil."},
                    headers=bearer(t, "ron"))
    assert r.status_code == 201
    facts = client.get("/v1/memories?type=FACT", headers=bearer(t, "ron")).json()["items"]
    assert len(facts) == 1 and facts[0]["origin"] == "feedback" and "converted to HLP 68" in facts[0]["content"]
    assert facts[0]["message_id"] == ans["message_id"] and OIL_Q[:30] in facts[0]["content"]
    with tenant_session(t.id) as s:
        lesson = s.execute(text("SELECT worked, feedback_value, specialist FROM agent_lessons WHERE message_id = :m"),
                           {"m": ans["message_id"]}).one()
        audited = s.execute(text("SELECT details FROM audit_events WHERE action = 'feedback' AND resource_id = :m"),
                            {"m": ans["message_id"]}).scalar_one()
    assert lesson.worked is False and lesson.feedback_value == -1.0 and lesson.specialist == ans["specialist"]
    assert audited["memory_id"] == facts[0]["id"]

    # Next time a similar question is asked, the complaint is recalled and shown with the answer.
    again = post_chat(client, t, "ron", "What hydraulic oil should press P3 use?")
    recalled = [m for m in _observe(again)["memories"] if m["id"] == facts[0]["id"]]
    assert recalled and recalled[0]["type"] == "FACT" and recalled[0]["similarity"] > 0.6
    assert "Earlier you flagged an answer to a similar question" in again["answer"]
    # ...not for an unrelated question, and never for another user.
    weld = post_chat(client, t, "ron", "What caused the weld porosity on bracket BR-220?")
    assert facts[0]["id"] not in [m["id"] for m in _observe(weld)["memories"]]
    other = post_chat(client, t, "sue", "What hydraulic oil should press P3 use?")
    assert _observe(other)["memories"] == [] and "Earlier you flagged" not in other["answer"]

    # Changing the vote to thumbs-up replaces the complaint by what worked.
    client.post("/v1/feedback", json={"message_id": ans["message_id"], "rating": "up"}, headers=bearer(t, "ron"))
    mine = client.get("/v1/memories", headers=bearer(t, "ron")).json()["items"]
    assert not [m for m in mine if m["origin"] == "feedback" and m["type"] == "FACT"]
    assert [m for m in mine if m["origin"] == "feedback" and m["type"] == "SKILL"]


def test_memory_aware_routing_prefers_the_specialist_with_good_history(client, plant):
    t = plant
    ambiguous = "Tell me about press P3"
    fresh = post_chat(client, t, "newbie", ambiguous)
    route = next(s for s in fresh["trace"] if s["step"] == "THINK.route")
    assert "memory:" not in route["reason"]
    default = fresh["specialist"]
    assert default != "maintenance_advisor"  # the router alone is unsure and picks another specialist
    for q in (OIL_Q, "How often is the hydraulic oil filter of press P3 replaced?"):
        ans = post_chat(client, t, "max", q)
        assert ans["specialist"] == "maintenance_advisor"
        assert client.post("/v1/feedback", json={"message_id": ans["message_id"], "rating": 5},
                           headers=bearer(t, "max")).status_code == 201
    routed = post_chat(client, t, "max", ambiguous)
    route = next(s for s in routed["trace"] if s["step"] == "THINK.route")
    assert routed["specialist"] == "maintenance_advisor"
    assert "memory: this user rated Maintenance Advisor answers" in route["reason"] and "2 up" in route["reason"]
    # An unambiguous question is not overridden by history.
    weld = post_chat(client, t, "max", "What caused the weld porosity on bracket BR-220?")
    assert weld["specialist"] == "quality_inspector"
    assert "memory:" not in next(s for s in weld["trace"] if s["step"] == "THINK.route")["reason"]


def test_rules_and_model_extraction(monkeypatch):
    items = learning.extract_rules("Answer in German please. Our line 3 uses SOP-114 for lockout. "
                                   "I am the maintenance lead on line 3. Which metric bolts should I use?")
    got = {(i.type, i.key, i.value) for i in items}
    assert ("PREFERENCE", "language", "german") in got and ("FACT", None, None) in got
    assert ("CONTEXT", "role", None) in got and not any(i.key == "units" for i in items)
    assert learning.extract_rules("I don't want short answers. Does our line 3 use SOP-114?") == []

    monkeypatch.setenv("EAP_LLM_MEMORY_EXTRACTION", "true")
    monkeypatch.setenv("EAP_LLM_MODEL_LIGHT", "openai/eap-light")
    get_settings.cache_clear()
    try:
        reply = ('[{"type": "FACT", "content": "Line 3 stamps door panels.", "key": null, "value": null},'
                 ' {"type": "PREFERENCE", "content": "Wants bullet points", "key": "format", "value": "bullets"}]')
        items, how = learning.extract("Line 3 stamps door panels, and I like lists. Use metric units.",
                                      ScriptedModel([reply]), get_settings())
        assert how == "rules + openai/eap-light"
        assert {(i.type, i.key, i.value, i.source) for i in items} >= {
            ("FACT", None, None, "llm"), ("PREFERENCE", "format", "bullets", "llm"),
            ("PREFERENCE", "units", "metric", "rules")}
        items, how = learning.extract("Use metric units.", ScriptedModel(["I think the user likes metric?"]),
                                      get_settings())
        assert how.startswith("rules (model extraction failed") and [i.key for i in items] == ["units"]
    finally:
        get_settings.cache_clear()


def _mem() -> dict:
    """The settings and embedder memory writes take (read now: the test changes the settings)."""
    return {"settings": get_settings(), "embedder": get_embedder()}


def test_decay_compaction_and_limits_keep_memory_bounded(client, make_tenant, monkeypatch):
    import definitions
    from assets.memory import memory_maintenance

    t = make_tenant("decay")
    monkeypatch.setenv("EAP_MEMORY_MAX_PER_USER", "10")
    get_settings.cache_clear()
    now = dt.datetime.now(dt.UTC)
    try:
        with tenant_session(t.id) as s:
            pref = memory.remember(s, t.id, "lea", "PREFERENCE", "Prefers short answers.", key="answer_length",
                                   metadata={"value": "short"}, **_mem()).memory.id
            for i in range(14):  # a hard limit holds on every write: the lowest-value memories are evicted
                memory.remember(s, t.id, "lea", "CONTEXT", f"Context note {i} about machine M-{i * 7} in hall {i}",
                                importance=0.2 + i * 0.02, **_mem())
            n = s.execute(text("SELECT count(*) FROM memories WHERE user_subject = 'lea'")).scalar()
            kept = set(s.execute(text("SELECT content FROM memories WHERE user_subject = 'lea'")).scalars())
        assert n == 10 and "Prefers short answers." in kept
        assert "Context note 0 about machine M-0 in hall 0" not in kept  # least important went first
        assert "Context note 13 about machine M-91 in hall 13" in kept

        with tenant_session(t.id) as s:
            s.execute(text("DELETE FROM memories WHERE user_subject = 'lea' AND memory_type = 'CONTEXT'"))
            old = now - dt.timedelta(days=200)
            stale = memory.remember(s, t.id, "lea", "EPISODIC", "Asked about the canteen opening hours", now=old,
                                    **_mem())
            fact = memory.remember(s, t.id, "lea", "FACT", "Our line 3 uses SOP-114 for lockout tagout.", now=old,
                                   **_mem())
            dup = Memory(tenant_id=t.id, user_subject="lea", memory_type="FACT", classification=2,
                         content="Our line 3 uses SOP-114 for lockout/tagout.", importance=0.6,
                         embedding=[float(x)
                                    for x in get_embedder().embed(["Our line 3 uses SOP-114 for lockout/tagout."])[0]],
                         embedding_dim=384, access_count=3)
            s.add(dup)
            for i, q in enumerate(["What is the oil change interval of press P3?", "Which oil does press P3 use?",
                                   "How do I check the oil level of press P3?", "Who replaces the P3 oil filter?"]):
                memory.remember(s, t.id, "lea", "EPISODIC", f"Asked “{q}” → Maintenance Advisor (verified)",
                                now=now - dt.timedelta(days=9, hours=i), **_mem())
            s.execute(text("UPDATE memories SET last_accessed_at = :n WHERE id = :p"), {"n": now, "p": pref})
            stale_id, fact_id = stale.memory.id, fact.memory.id
        res = dg.materialize([memory_maintenance], resources=definitions.defs.resources)
        assert res.success
        meta = res.asset_materializations_for_node("memory_maintenance")[0].metadata
        mine = meta["per_tenant"].value[str(t.id)]
        assert (mine["forgotten"], mine["merged"], mine["summarised"]) == (1, 1, 4)
        with tenant_session(t.id) as s:
            rows = {r.id: r for r in s.execute(text(
                "SELECT id, memory_type, content, importance, merged_count, access_count, metadata FROM memories "
                "WHERE user_subject = 'lea'")).all()}
            audited = s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'memory.maintenance'")).scalar()
        assert stale_id not in rows  # 200 days unused: an episode decays below the floor and is forgotten
        facts = [r for r in rows.values() if r.memory_type == "FACT"]
        assert len(facts) == 1 and facts[0].merged_count == 2 and facts[0].access_count == 3
        assert facts[0].id == fact_id or facts[0].importance <= 0.65
        episodes = [r for r in rows.values() if r.memory_type == "EPISODIC"]
        assert len(episodes) == 1 and episodes[0].metadata["summary"] and episodes[0].metadata["episodes"] == 4
        assert episodes[0].content.startswith("Summary of 4 earlier exchanges") and "press P3" in episodes[0].content
        assert rows[pref].importance == pytest.approx(0.9, abs=0.01)  # used today: no decay
        assert len(rows) <= 10 and audited == 1
        # Still recalled after compaction.
        with tenant_session(t.id) as s:
            hits = memory.recall(s, "lea", Caller("operator"), get_embedder().embed(["lockout on line 3"])[0],
                                 settings=get_settings())
        assert facts[0].id in [h.id for h in hits]
    finally:
        get_settings.cache_clear()


def test_isolation_between_users_and_tenants_and_real_forgetting(client, plant, make_tenant):
    t, other_tenant = plant, make_tenant("memb")
    index_document(other_tenant, "P3 manual", 2, [], MANUAL)
    first = post_chat(client, t, "olga", "Answer in bullet points and keep it short. Our line 3 uses SOP-114 for "
                                     "lockout. What caused the weld porosity on bracket BR-220?")
    assert len([m for m in _learned(first)["memories"] if m["type"] in ("PREFERENCE", "FACT")]) == 3
    mine = client.get("/v1/memories", headers=bearer(t, "olga")).json()
    assert mine["total"] == 4 and mine["withheld"] == 0  # two preferences, a fact, the episode
    assert client.get("/v1/memories?limit=2&offset=2", headers=bearer(t, "olga")).json()["items"][0]["id"] == \
        mine["items"][2]["id"]
    fact_id = next(m["id"] for m in mine["items"] if m["type"] == "FACT")

    # Same subject in another tenant, another subject in the same tenant: nothing recalled, nothing listed.
    for tenant, user in ((other_tenant, "olga"), (t, "mallory")):
        assert client.get("/v1/memories", headers=bearer(tenant, user)).json()["total"] == 0
        body = post_chat(client, tenant, user, "Which procedure covers lockout on line 3?")
        assert _observe(body)["memories"] == [] and "preferences_applied" not in _observe(body)
        assert client.delete(f"/v1/memories/{fact_id}", headers=bearer(tenant, user)).status_code == 404
        listed = client.get("/v1/memories", headers=bearer(tenant, user)).json()["items"]
        assert [m["type"] for m in listed] == ["EPISODIC"]  # only the episode of their own question
    with tenant_session(other_tenant.id) as s:
        assert s.execute(text("SELECT count(*) FROM memories WHERE user_subject = 'olga'")).scalar() == 1
    recalled = _observe(post_chat(client, t, "olga", "Which procedure covers lockout on line 3?"))["memories"]
    assert fact_id in [m["id"] for m in recalled]

    # Deleting one memory, then everything: really deleted, audited, never recalled again.
    assert client.delete(f"/v1/memories/{fact_id}", headers=bearer(t, "olga")).status_code == 204
    assert client.delete(f"/v1/memories/{fact_id}", headers=bearer(t, "olga")).status_code == 404
    gone = client.delete("/v1/memories", headers=bearer(t, "olga")).json()
    assert gone["memories"] >= 3 and gone["lessons"] >= 2
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM memories WHERE user_subject = 'olga'")).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM agent_lessons WHERE user_subject = 'olga'")).scalar() == 0
        actions = s.execute(text("SELECT action FROM audit_events WHERE actor = 'olga' AND action LIKE 'memory.%' "
                                 "ORDER BY seq")).scalars().all()
        assert s.execute(text("SELECT count(*) FROM memories WHERE user_subject = 'mallory'")).scalar() >= 1
    assert actions == ["memory.delete", "memory.delete_all"]
    after = post_chat(client, t, "olga", OIL_Q)
    assert _observe(after)["memories"] == [] and "preferences_applied" not in _observe(after)
    assert len(_bullets(after["answer"])) >= 3  # the default form is back
    assert client.get("/v1/memories?type=BOGUS", headers=bearer(t, "olga")).status_code == 422


def test_memory_from_a_class_iii_answer_is_not_recalled_without_access(client, plant):
    t = plant
    q = "Remember that HT-5 is our standard anneal recipe. What is the heat treatment recipe HT-5 for the housings?"
    first = post_chat(client, t, "quinn", q, groups=("qa",))
    assert first["citations"] and first["citations"][0]["title"] == "HT-5 recipe"
    learned = {m["type"]: m for m in _learned(first)["memories"]}
    assert learned["EPISODIC"]["classification"] == 3
    with tenant_session(t.id) as s:
        labels = s.execute(text("SELECT memory_type, classification, acl_groups FROM memories "
                                "WHERE user_subject = 'quinn'")).all()
    assert {(m, c, tuple(a)) for m, c, a in labels} == {("EPISODIC", 3, ("qa",)), ("FACT", 3, ("qa",))}

    follow = "anneal housings recipe"
    for role, groups in ((Role.operator, ()), (Role.operator, ("rnd",)), (Role.viewer, ("qa",))):
        body = post_chat(client, t, "quinn", follow, role=role, groups=groups)  # access reduced since
        assert [m for m in _observe(body)["memories"] if m["classification"] >= 3] == []
        assert "540" not in body["answer"] and "standard anneal recipe" not in body["answer"]
        listed = client.get("/v1/memories", headers=bearer(t, "quinn", role, groups)).json()
        assert listed["withheld"] >= 2 and all(m["classification"] < 3 for m in listed["items"])
        with tenant_session(t.id) as s:
            out = run_agent(s, Caller(role.value, groups), "quinn", follow, [], tenant_id=t.id)
        assert "HT-5" not in out.prepared.messages[0]["content"]
    # With the group back, the memory is recalled again.
    body = post_chat(client, t, "quinn", follow, groups=("qa",))
    assert {m["classification"] for m in _observe(body)["memories"]} >= {3}


def test_bad_memory_requests_are_4xx(client, make_tenant):
    t = make_tenant("membad")
    for body in ({"type": "EPISODIC", "content": "x"}, {"type": "FACT", "content": ""}, {"type": "FACT"},
                 {"type": "FACT", "content": "x" * 1001}, {"type": "FACT", "content": "a\x00b"}):
        r = client.post("/v1/memories", json=body, headers=bearer(t, "u"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", body
    r = client.post("/v1/memories", json={"type": "PREFERENCE", "content": "Please answer in bullet points"},
                    headers=bearer(t, "u"))
    assert r.status_code == 201 and r.json()["key"] == "format"
    for url in ("/v1/memories?limit=0", "/v1/memories?offset=-1", f"/v1/memories/{uuid.uuid4()}x"):
        assert client.get(url, headers=bearer(t, "u")).status_code in (404, 405, 422)
    assert client.delete(f"/v1/memories/{uuid.uuid4()}", headers=bearer(t, "u")).json()["error"]["code"] == \
        "memory_not_found"
    assert client.get("/v1/memories").status_code == 401
