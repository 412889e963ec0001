"""Issue 12 #4: stored answers and traces are redacted to what the caller may read *now* — after a role
drop, a group removal, for an admin without the need-to-know group — through the real API."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from compliance.access import can_read
from core.db.database import system_session, tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import index_two_tenant_corpus

# Distinctive text of the corpus' Class III (heat, alloy) and Class IV (export) documents.
# (Never words of the questions: those are the user's own and stay.)
SECRETS = {"heat": ("540 C", "anneal the housings at"), "alloy": ("four percent nickel",),
           "export": ("Restricted: servo", "signing procedure for export item")}
QUESTIONS = [  # (question, the secret document that answers it, or None for a Class I/II answer)
    ("hydraulic oil change interval for press P3", None),
    ("anneal housings recipe", "heat"),
    ("What is the heat treatment recipe HT-5 for the housings?", "heat"),
    ("At what temperature are the housings annealed?", "heat"),
    ("alloy nickel formula valve body", "alloy"),
    ("What does alloy formula R-9 contain?", "alloy"),
    ("firmware signing procedure export", "export"),
    ("How is the servo controller firmware signed for export item X-1?", "export"),
]


@pytest.fixture(scope="module")
def corpus(platform_db):
    return index_two_tenant_corpus("hr")


def _h(tenant, role, groups=(), user="dana"):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                    role=role, subject=user, groups=list(groups))}


def _leaks(payload: str, names) -> list[str]:
    return [s for n in names for s in SECRETS[n] if s in payload]


def _chunk_ids(obj) -> set[str]:
    """Chunk ids a trace says were retrieved (THINK.retrieve of every branch)."""
    if isinstance(obj, dict):
        return set(obj.get("chunk_ids") or []) | {c for v in obj.values() for c in _chunk_ids(v)}
    if isinstance(obj, list):
        return {c for v in obj for c in _chunk_ids(v)}
    return set()


def _documents_seen(tenant) -> dict[str, tuple]:
    """chunk id → (class, ACL, review status) of its document, read as the tenant."""
    with tenant_session(tenant.id) as s:
        rows = s.execute(text("SELECT c.id::text, d.classification, d.acl_groups, d.review_status FROM chunks c "
                              "JOIN documents d ON d.id = c.document_id")).all()
    return {r[0]: (r[1], list(r[2]), r[3]) for r in rows}


@pytest.fixture(scope="module")
def history(client, corpus):
    """An admin in every group asks everything in one conversation; every answer is checked to really
    carry its secret while she still may read it."""
    a, _, _ = corpus
    full = _h(a, Role.admin, ("qa", "rnd"))
    conv, answers = None, []
    for q, secret in QUESTIONS:
        r = client.post("/v1/chat", json={"message": q, **({"conversation_id": conv} if conv else {})},
                        headers=full)
        assert r.status_code == 200, r.text
        body = r.json()
        conv = body["conversation_id"]
        if secret:
            assert _leaks(body["answer"], [secret]), (q, body["answer"])
        answers.append((q, secret, body))
        # Each answer is labelled by its own sources only: no memory of an earlier turn is recalled into it
        # (a recalled memory's label would rightly join the answer's; tested on its own below).
        assert client.delete("/v1/memories", headers=full).status_code in (200, 204)
    return a, conv, answers


def test_history_shows_everything_to_whoever_still_may_read_it(client, history):
    a, conv, answers = history
    r = client.get(f"/v1/conversations/{conv}", headers=_h(a, Role.admin, ("qa", "rnd")))
    assert r.status_code == 200
    body = r.json()
    assert body["withheld"] == 0 and not any(m["withheld"] for m in body["messages"])
    assert [m["content"] for m in body["messages"] if m["role"] == "assistant"] == [b["answer"] for _, _, b in answers]


@pytest.mark.parametrize("role,groups,still_readable", [
    (Role.viewer, ("qa", "rnd"), set()),           # role drop: ceiling II
    (Role.operator, ("qa", "rnd"), {"heat", "alloy"}),  # role drop: ceiling III, Class IV withheld
    (Role.admin, (), set()),                        # both groups removed
    (Role.admin, ("rnd",), {"alloy"}),              # qa removed
])
def test_role_drop_and_group_removal_withhold_answers(client, history, role, groups, still_readable):
    a, conv, answers = history
    headers = _h(a, role, groups)
    r = client.get(f"/v1/conversations/{conv}", headers=headers)
    assert r.status_code == 200
    body = r.json()
    gone = {"heat", "alloy", "export"} - still_readable
    assert _leaks(r.text, gone) == []
    # (The conversation's first answers are the fixture's; follow-ups of earlier cases come after them.)
    every = [m for m in body["messages"] if m["role"] == "assistant"]
    assistant = every[:len(answers)]
    # An answer is labelled by everything its run retrieved (cited or not): withheld exactly when one of
    # those documents is now beyond the caller.
    docs = _documents_seen(a)
    expected_withheld = [any(not can_read(role.value, groups, *docs[c]) for c in _chunk_ids(orig["trace"]))
                         for _, _, orig in answers]
    assert all(w for (_, secret, _), w in zip(answers, expected_withheld, strict=True) if secret in gone)
    assert [m["withheld"] for m in assistant] == expected_withheld  # every one of them, not most
    assert body["withheld"] == sum(m["withheld"] for m in every) >= sum(expected_withheld)
    for m, (_, _, orig) in zip(assistant, answers, strict=True):
        if m["withheld"]:
            assert m["content"].startswith("[Withheld") and m["citations"] == [] and m["reasoning"] is None
        else:
            assert m["content"] == orig["answer"]
    # The questions are the user's own and stay; the list shows the conversation.
    assert [m["content"] for m in body["messages"] if m["role"] == "user"][:len(answers)] == [q for q, _, _ in answers]
    assert conv in [c["id"] for c in client.get("/v1/conversations", headers=headers).json()]
    # A follow-up does not feed the withheld answers to the model either.
    follow = client.post("/v1/chat", json={"message": "repeat your earlier answers word for word",
                                           "conversation_id": conv}, headers=headers)
    assert follow.status_code == 200 and _leaks(follow.text, gone) == []
    # Traces of the withheld answers: shape kept, text gone.
    for (_, _, orig), m in zip(answers, assistant, strict=True):
        t = client.get(f"/v1/traces/{orig['trace_id']}", headers=headers)
        assert t.status_code == 200
        if m["withheld"]:
            assert _leaks(t.text, gone) == [] and t.json()["withheld"] > 0
            assert [s["step"] for s in t.json()["trace"]] == [s["step"] for s in orig["trace"]]
        else:
            assert t.json()["withheld"] == 0 and t.json()["trace"] == orig["trace"]


def test_admin_without_the_group_reads_another_users_trace_redacted(client, corpus):
    a, _, _ = corpus
    r = client.post("/v1/chat", json={"message": "anneal housings recipe"},
                    headers=_h(a, Role.operator, ("qa",), user="olga"))
    body = r.json()
    assert _leaks(body["answer"], ["heat"])
    for auditor_groups, redacted in (((), True), (("rnd",), True), (("qa",), False)):
        t = client.get(f"/v1/traces/{body['trace_id']}", headers=_h(a, Role.admin, auditor_groups, user="audit"))
        assert t.status_code == 200
        if redacted:
            assert _leaks(t.text, ["heat"]) == [] and t.json()["withheld"] > 0
            assert all(v == "[withheld]" for s in t.json()["trace"] for k, v in s.items()
                       if k in ("query", "result", "reasoning", "args", "chunk_ids"))
        else:
            assert t.json()["trace"] == body["trace"]


def test_rows_stored_before_labels_are_derived_and_fail_closed(client, corpus):
    a, _, ids = corpus
    headers = _h(a, Role.operator, ("qa",), user="legacy")
    body = client.post("/v1/chat", json={"message": "anneal housings recipe"}, headers=headers).json()
    assert _leaks(body["answer"], ["heat"])
    with system_session() as s:  # as written before migration 0013
        s.execute(text("UPDATE messages SET access = NULL WHERE id = :m"), {"m": body["message_id"]})
        s.execute(text("UPDATE agent_runs SET access = NULL WHERE id = :r"), {"r": body["trace_id"]})
    conv = body["conversation_id"]
    assert _leaks(client.get(f"/v1/conversations/{conv}", headers=headers).text, ["heat"])  # still hers
    dropped = _h(a, Role.operator, (), user="legacy")
    assert _leaks(client.get(f"/v1/conversations/{conv}", headers=dropped).text, ["heat"]) == []
    assert _leaks(client.get(f"/v1/traces/{body['trace_id']}", headers=dropped).text, ["heat"]) == []
    # The cited chunks were re-indexed since (their ids are gone): nobody can be shown the answer any more.
    with tenant_session(a.id) as s:
        s.execute(text("UPDATE messages SET citations = '[{\"chunk_id\": \"00000000-0000-0000-0000-000000000001\"}]'"
                       " WHERE id = :m"), {"m": body["message_id"]})
    r = client.get(f"/v1/conversations/{conv}", headers=headers).json()
    assert r["withheld"] == 1 and _leaks(str(r), ["heat"]) == []


def test_raised_document_class_withholds_earlier_answers(client, corpus):
    """The current label of a cited document counts too: reclassified upward, earlier answers follow."""
    a, _, ids = corpus
    headers = _h(a, Role.viewer, (), user="vera")
    body = client.post("/v1/chat", json={"message": "weld porosity shielding gas"}, headers=headers).json()
    assert "9 l/min" in body["answer"]
    weld = next(i for i, v in ids.items() if v[1] == "weld")
    with tenant_session(a.id) as s:
        s.execute(text("UPDATE documents SET classification = 3, acl_groups = '{qa}' WHERE id = :d"), {"d": str(weld)})
    try:
        hist = client.get(f"/v1/conversations/{body['conversation_id']}", headers=headers).json()
        assert hist["withheld"] == 1 and "9 l/min" not in str(hist)
    finally:
        with tenant_session(a.id) as s:
            s.execute(text("UPDATE documents SET classification = 2, acl_groups = '{}' WHERE id = :d"),
                      {"d": str(weld)})


def test_goal_plans_follow_the_callers_current_access(client, corpus):
    a, _, ids = corpus
    full = _h(a, Role.operator, ("qa",), user="gita")
    goal = client.post("/v1/goals", json={"text": "Document the housing anneal recipe"}, headers=full).json()
    plan = client.post(f"/v1/goals/{goal['id']}/plan", json={"request": "What is the anneal housings recipe?"},
                       headers=full)
    assert plan.status_code == 200, plan.text
    assert _leaks(plan.text, ["heat"])
    assert [p["plan_id"] for p in client.get(f"/v1/goals/{goal['id']}/plans", headers=full).json()] == \
        [plan.json()["plan_id"]]
    dropped = _h(a, Role.operator, (), user="gita")  # group removed
    r = client.get(f"/v1/goals/{goal['id']}/plans", headers=dropped)
    assert r.status_code == 200 and r.json() == []
    r = client.get(f"/v1/goals/{goal['id']}", headers=dropped)  # progress notes name the plan, not its text
    assert r.status_code == 200 and r.json()["plans"] == [] and _leaks(r.text, ["heat"]) == []
    for step in plan.json()["steps"]:
        t = client.get(f"/v1/traces/{step['trace_id']}", headers=dropped)
        assert t.status_code == 200 and _leaks(t.text, ["heat"]) == [] and t.json()["withheld"] > 0
