"""Issue 15 #5: the export-control guard decides on every answer path — POST /v1/chat (JSON and SSE) and
`eap ask` — and its decision is a step of the stored trace. A caller who is not cleared gets no statement that
names an export-control term or cites an export-controlled document; a cleared caller gets the answer."""

from __future__ import annotations

import json

from sqlalchemy import text

from core.db.database import system_session
from core.models import Role
from tests.builders import bearer, index_document, scripted_chat

SERVO = "Servo drive SD-9 mounting: torque the SD-9 mounts to 12 Nm before the first run."
PUMP = "Press P7 hydraulic pump: change the pump filter every 500 operating hours."


def _controlled(doc_id) -> None:
    """The classifier's export-control finding on the document (as ingestion records it)."""
    with system_session() as s:
        s.execute(text("UPDATE documents SET classification_reasons = CAST(:r AS jsonb) WHERE id = :d"),
                  {"d": doc_id, "r": json.dumps([{"detector": "declared", "class": "II"},
                                                 {"detector": "export_control", "class": "IV", "evidence": "ECCN"}])})


def _guard_step(trace: list[dict]) -> dict:
    return next(st for st in trace if st["step"] == "COMPLIANCE.export_control")


def _sse(client, t, user, message, groups=()) -> tuple[str, dict]:
    r = client.post("/v1/chat", json={"message": message},
                    headers={**bearer(t, user, Role.operator, groups), "Accept": "text/event-stream"})
    assert r.status_code == 200, r.text
    events = [(ev.split("\n")[0].removeprefix("event: "), json.loads(ev.split("\n")[1].removeprefix("data: ")))
              for ev in r.text.strip().split("\n\n")]
    return "".join(d["text"] for e, d in events if e == "delta"), events[-1][1]


def test_controlled_sources_are_withheld_from_uncleared_callers_on_every_path(client, make_tenant, capsys):
    t = make_tenant("exportctl")
    doc = index_document(t, "SD-9 mounting", 2, [], SERVO)
    _controlled(doc)
    question = "What torque for the SD-9 mounts?"

    cleared = client.post("/v1/chat", json={"message": question},
                          headers=bearer(t, "clara", Role.operator, ("export-cleared",)))
    assert cleared.status_code == 200, cleared.text
    assert "12 Nm" in cleared.json()["answer"]
    assert _guard_step(cleared.json()["trace"])["decision"] == "released"

    plain = client.post("/v1/chat", json={"message": question}, headers=bearer(t, "olaf", Role.operator))
    body = plain.json()
    assert "12 Nm" not in body["answer"] and "export-control guard" in body["answer"] and body["citations"] == []
    step = _guard_step(body["trace"])
    assert (step["decision"], step["cleared"], step["controlled_documents"]) == ("withheld", False, [str(doc)])
    stored = client.get(f"/v1/traces/{body['trace_id']}", headers=bearer(t, "olaf", Role.operator)).json()
    assert _guard_step(stored["trace"])["decision"] == "withheld"

    streamed, done = _sse(client, t, "sven", question)
    assert "12 Nm" not in streamed and "export-control guard" in streamed
    assert done["outcome"] and "12 Nm" not in json.dumps(done)

    # `eap ask` (the command's own function, in process: tests/integration/test_chat_paths.py runs the binary).
    from eap.ask import run_ask

    assert run_ask(question, t.name, "operator", "", 6, user="cli-user", as_json=True) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "12 Nm" not in cli["answer"] and _guard_step(cli["trace"])["decision"] == "withheld"

    # The dashboard counts the guard's decisions.
    dash = client.get("/v1/compliance/dashboard", headers=bearer(t, "ada", Role.admin)).json()
    assert dash["export_control"] == {"released": 1, "withheld": 3}


def test_statements_naming_export_terms_are_removed_and_the_rest_kept(client, make_tenant):
    t = make_tenant("exportterm")
    index_document(t, "P7 pump", 2, [], PUMP + " The pump controller is a dual-use item under ECCN 2B999.")
    reply = ("- Change the pump filter every 500 operating hours. [1]\n"
             "- The pump controller is a dual-use item under ECCN 2B999. [1]")
    with scripted_chat(client.app, [reply] * 3):
        r = client.post("/v1/chat", json={"message": "How often is the P7 pump filter changed?"},
                        headers=bearer(t, "olaf", Role.operator))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "500 operating hours" in body["answer"] and "dual-use" not in body["answer"].lower()
    assert "ECCN" not in body["answer"] and len(body["citations"]) == 1
    step = _guard_step(body["trace"])
    assert step["decision"] == "redacted" and step["removed"] == 1
    assert step["terms"] == ["DUAL-USE", "ECCN 2B999"] and step["controlled_documents"] == []

    with scripted_chat(client.app, [reply] * 3):
        r = client.post("/v1/chat", json={"message": "How often is the P7 pump filter changed?"},
                        headers=bearer(t, "clara", Role.operator, ("export-cleared",)))
    assert "dual-use" in r.json()["answer"] and _guard_step(r.json()["trace"])["decision"] == "released"
