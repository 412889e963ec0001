"""`eap ask` and `POST /v1/chat` are one use case (agents/chat.py): for the same question and the same
access they route to the same specialist, cite the same chunks and leave the same audit records — the
`chat` record and one `chunk.access` record per Class III/IV chunk the model saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import index_two_tenant_corpus

# An admin in both groups: the answer draws on Class III (qa) and Class IV (qa) documents, so the per-chunk
# records are part of what is compared.
QUESTION = "What is the heat treatment recipe HT-5 for the housings, and the export firmware signing procedure?"
GROUPS = ("qa", "rnd")
# Differ by construction: when and through which edge the question was asked, and the ids of what it created.
# Transport details: which edge asked (channel, streamed) and its request id (API only), and timings.
_VOLATILE = {"latency_ms", "channel", "streamed", "request_id"}


@pytest.fixture(scope="module")
def corpus(platform_db):
    return index_two_tenant_corpus("cp")


def _eap_ask(tenant, user: str, question: str = QUESTION, *extra: str) -> dict:
    eap = str(Path(sys.executable).parent / "eap")
    r = subprocess.run([eap, "ask", question, "--tenant", tenant.name, "--role", "admin", "--groups",
                        ",".join(GROUPS), "--user", user, "--json", *extra],
                       capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _api(client, tenant, user: str, *, stream: bool = False) -> dict:
    headers = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                       role=Role.admin, subject=user, groups=list(GROUPS))}
    if not stream:
        r = client.post("/v1/chat", json={"message": QUESTION}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()
    r = client.post("/v1/chat", json={"message": QUESTION}, headers={**headers, "Accept": "text/event-stream"})
    assert r.status_code == 200, r.text
    events = [(ev.split("\n")[0].removeprefix("event: "), json.loads(ev.split("\n")[1].removeprefix("data: ")))
              for ev in r.text.strip().split("\n\n")]
    done = events[-1][1]
    return {**done, "citations": events[-2][1]["citations"],
            "answer": "".join(d["text"] for e, d in events if e == "delta")}


def _audit(tenant, user: str, res: dict) -> list[tuple]:
    """The audit records the question left, with the ids of what it created replaced by their names."""
    with tenant_session(tenant.id) as s:
        rows = s.execute(text("SELECT actor, actor_role, action, resource_type, resource_id, outcome, details "
                              "FROM audit_events WHERE actor = :u ORDER BY seq"), {"u": user}).all()
    names = {res["message_id"]: "<message>", res["conversation_id"]: "<conversation>", res["trace_id"]: "<trace>"}

    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items() if k not in _VOLATILE}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return names.get(v, v) if isinstance(v, str) else v

    return [(r.actor_role, r.action, r.resource_type, norm(r.resource_id), r.outcome, norm(r.details)) for r in rows]


def test_eap_ask_and_post_chat_are_the_same_use_case(client, corpus):
    a, _, ids = corpus
    cli = _eap_ask(a, "paths-cli")
    api = _api(client, a, "paths-api")
    sse = _api(client, a, "paths-sse", stream=True)

    for res in (api, sse):
        assert res["specialist"] == cli["specialist"]
        assert res["citations"] == cli["citations"]
        assert res["answer"] == cli["answer"]
        assert (res["model"], res["model_tier"], res["outcome"]) == (cli["model"], cli["model_tier"], cli["outcome"])
    # The question reached Class III/IV sources, so VERIFY, sanitising and the per-chunk audit all had work.
    classes = {name: cls for _, name, cls, _ in ids.values()}
    cited = {ids[uuid.UUID(c["document_id"])][1] for c in cli["citations"]}
    assert any(classes[n] >= 3 for n in cited), cli

    records = _audit(a, "paths-cli", cli)
    assert records == _audit(a, "paths-api", api) == _audit(a, "paths-sse", sse)
    actions = [r[1] for r in records]
    assert actions.count("chat") == 1
    chat = next(r for r in records if r[1] == "chat")
    assert chat[2:4] == ("message", "<message>")
    assert chat[5]["cited_chunk_ids"] == [c["chunk_id"] for c in cli["citations"]]
    assert chat[5]["specialist"] == cli["specialist"] and chat[5]["trace_id"] == "<trace>"
    # One chunk.access record per retrieved Class III/IV chunk, naming the chunk and the answer.
    with tenant_session(a.id) as s:
        restricted = {str(c) for (c,) in s.execute(text(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.classification >= 3 "
            "AND c.id = ANY(CAST(:ids AS uuid[]))"), {"ids": chat[5]["retrieved_chunk_ids"]}).all()}
    per_chunk = [r for r in records if r[1] == "chunk.access"]
    assert restricted and {r[3] for r in per_chunk} == restricted and len(per_chunk) == len(restricted)
    assert all(r[2] == "chunk" and r[5]["via"] == "chat" and r[5]["message_id"] == "<message>" for r in per_chunk)

    # The CLI's answer is stored like the API's: the user reads it back as history, and its trace.
    with tenant_session(a.id) as s:
        stored = s.execute(text("SELECT m.content, m.specialist, m.access IS NOT NULL FROM messages m "
                                "WHERE m.id = CAST(:m AS uuid)"), {"m": cli["message_id"]}).one()
    assert stored == (cli["answer"], cli["specialist"], True)
    # `--conversation` continues it, as `conversation_id` does over the API.
    follow = _eap_ask(a, "paths-cli", "At what temperature are the housings annealed?",
                      "--conversation", cli["conversation_id"])
    assert follow["conversation_id"] == cli["conversation_id"] and "540" in follow["answer"]
    with tenant_session(a.id) as s:
        roles = s.execute(text("SELECT role FROM messages WHERE conversation_id = CAST(:c AS uuid) "
                               "ORDER BY created_at, id"), {"c": cli["conversation_id"]}).scalars().all()
    assert roles == ["user", "assistant", "user", "assistant"]
