"""Issue 15 #3: GDPR requests, persisted and processed by the pipeline. The person's data is made through the real API
(chat, memories, goals, feedback), requests go through POST /v1/gdpr/requests, the Dagster sensor and job process
them; the access export holds the person's data and nobody else's; an erasure under a hold is refused; after an
erasure no identifier of the person is left anywhere in the database (every text, JSON and array column of every
table, searched as the superuser) while the audit trail still verifies."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import text

from core.db.database import get_urls, system_session
from tests.builders import officer_headers as _officer
from tests.builders import post_chat
from tests.builders import role_headers as _h


def _process(client) -> list[dg.ExecuteInProcessResult]:
    """One tick of the gdpr_requests sensor, then the runs it asked for (as the daemon would)."""
    import definitions
    from sensors.compliance import gdpr_requests

    inst = dg.DagsterInstance.ephemeral()
    res = gdpr_requests(dg.build_sensor_context(instance=inst, resources={"db": definitions.defs.resources["db"]}))
    if isinstance(res, dg.SkipReason):
        return []
    job = definitions.defs.resolve_job_def("process_gdpr_requests")
    return [job.execute_in_process(instance=inst, tags=res.tags, resources={"db": definitions.defs.resources["db"]})]


def _search_everywhere(needles: list[str]) -> dict[str, int]:
    """Every text, JSON and array column of every table of the database, as the superuser (RLS does not apply)."""
    eng = sa.create_engine(get_urls().admin)
    hits: dict[str, int] = {}
    try:
        with eng.connect() as conn:
            cols = conn.execute(text(
                "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
                "AND c.table_schema NOT IN ('pg_catalog', 'information_schema') "
                "AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY')")).all()
            assert len(cols) > 50  # really every table
            for schema, table, col in cols:
                n = conn.execute(text(
                    f'SELECT count(*) FROM "{schema}"."{table}" WHERE EXISTS (SELECT 1 FROM unnest(CAST(:n AS text[])) '
                    f'x(v) WHERE strpos("{col}"::text, x.v) > 0)'), {"n": needles}).scalar()
                if n:
                    hits[f"{schema}.{table}.{col}"] = n
    finally:
        eng.dispose()
    return hits


def test_access_export_holds_refused_erasure_and_erasure_everywhere(client, make_tenant):
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"gdpr-{uuid.uuid4().hex[:8]}")
    tag = uuid.uuid4().hex[:8]
    erin, email, name = f"erin.gdpr-{tag}", f"erin.{tag}@example.test", f"Erin Quokka{tag}"
    finn = f"finn.other-{tag}"
    with system_session() as s:
        s.execute(text("INSERT INTO users (tenant_id, username, email, display_name, role) VALUES "
                       "(:t, :u, :e, :n, 'operator'), (:t, :f, NULL, NULL, 'operator')"),
                  {"t": t.id, "u": erin, "e": email, "n": name, "f": finn})
    me = _h(t, erin)
    # Erin's footprint, made the way she makes it.
    a1 = post_chat(client, t, erin, f"I am {name}, reach me at {email}. How often is the hydraulic oil changed?")
    assert client.post("/v1/feedback", json={"message_id": a1["message_id"], "rating": "down",
                                             "comment": f"{name} wants the page number"}, headers=me).status_code == 201
    assert client.post("/v1/memories", json={"type": "FACT", "content": f"{name} supervises press P3"},
                       headers=me).status_code == 201
    assert client.post("/v1/goals", json={"text": f"Train {name} on weld porosity checks"},
                       headers=me).status_code == 201
    finn_q = f"Weld porosity on bracket BR-220 for {finn}?"
    post_chat(client, t, finn, finn_q)
    # Another person cannot ask on Erin's behalf; a compliance officer can.
    r = client.post("/v1/gdpr/requests", json={"kind": "access", "subject": erin}, headers=_h(t, finn))
    assert r.status_code == 403 and r.json()["error"]["code"] == "compliance_officer_required"
    assert client.post("/v1/gdpr/requests", json={"kind": "deletion"}, headers=me).status_code == 422

    r = client.post("/v1/gdpr/requests", json={"kind": "access"}, headers=me)
    assert r.status_code == 201
    access = r.json()
    assert access["status"] == "received" and access["subject"] == erin and not access["on_behalf"]
    assert 29 <= (_dt(access["due_at"]) - _dt(access["received_at"])).days <= 30
    r = client.post("/v1/gdpr/requests", json={"kind": "portability", "subject": erin, "reason": "her new employer"},
                    headers=_officer(t))
    assert r.status_code == 201 and r.json()["on_behalf"] is True
    port = r.json()

    runs = _process(client)
    assert len(runs) == 1 and runs[0].success
    assert _process(client) == []  # nothing left waiting: the sensor skips
    got = client.get(f"/v1/gdpr/requests/{access['id']}", headers=me).json()
    assert got["status"] == "completed" and got["exports"] == ["json", "html"]
    assert client.get(f"/v1/gdpr/requests/{access['id']}", headers=_h(t, finn)).status_code == 404
    assert client.get(f"/v1/gdpr/requests/{access['id']}/export", headers=_h(t, finn)).status_code == 404

    data = client.get(f"/v1/gdpr/requests/{access['id']}/export", headers=me).json()
    page = client.get(f"/v1/gdpr/requests/{access['id']}/export", params={"format": "html"}, headers=me)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    blob = json.dumps(data)
    # Hers: profile, the conversation with question and answer, memory, goal, feedback, usage, audit entries.
    assert data["profile"]["email"] == email
    assert any(email in m["content"] for c in data["conversations"] for m in c["messages"])
    assert any(m["content"] == a1["answer"] for c in data["conversations"] for m in c["messages"])
    assert any("supervises press P3" in m["content"] for m in data["memories"])
    assert [g["text"] for g in data["goals"]] == [f"Train {name} on weld porosity checks"]
    assert data["feedback"][0]["comment"] == f"{name} wants the page number"
    assert data["usage"] and data["agent_runs"]
    assert {"gdpr.request.received", "memory.create"} <= {e["action"] for e in data["audit_entries"]}
    assert name in page.text and "&lt;" not in name
    # Nobody else's.
    assert finn not in blob and "BR-220" not in blob and finn not in page.text
    portable = client.get(f"/v1/gdpr/requests/{port['id']}/export", headers=_officer(t)).json()
    assert portable["memories"] and "audit_entries" not in portable
    assert client.get(f"/v1/gdpr/requests/{port['id']}/export", params={"format": "html"},
                      headers=me).status_code == 404

    # Erasure under a destruction hold: refused, with the reason, nothing touched.
    hold = client.post("/v1/holds", json={"scope": "user", "target": erin, "reason": "works council dispute"},
                       headers=_officer(t)).json()
    held = client.post("/v1/gdpr/requests", json={"kind": "erasure"}, headers=me).json()
    assert _process(client)[0].success
    held = client.get(f"/v1/gdpr/requests/{held['id']}", headers=me).json()
    assert held["status"] == "refused" and "works council dispute" in held["result"]["reason"]
    assert _search_everywhere([erin]), "a refused erasure changed nothing"

    assert client.post(f"/v1/holds/{hold['id']}/release", json={"reason": "settled"},
                       headers=_officer(t)).status_code == 200
    erase = client.post("/v1/gdpr/requests", json={"kind": "erasure"}, headers=me).json()
    assert _process(client)[0].success
    done = client.get("/v1/gdpr/requests", headers=_officer(t)).json()
    states = {r["id"]: r for r in done}
    assert states[erase["id"]]["status"] == "completed" and states[erase["id"]]["result"]["residual"] == {}
    assert states[erase["id"]]["subject"].startswith("erased:")
    assert {states[i]["status"] for i in (access["id"], port["id"])} == {"completed"}

    # No identifier of hers anywhere in the database; the earlier exports are gone too.
    assert _search_everywhere([erin, email, name]) == {}
    assert not any(p.exists() for p in _export_dirs(t, access["id"], port["id"]))
    # The records stay: her usage (numbers), feedback vote, and every audit record, pseudonymised …
    with system_session() as s:
        usage = s.execute(text("SELECT user_subject, prompt_tokens FROM usage_records WHERE tenant_id = :t "
                               "AND user_subject LIKE 'erased:%'"), {"t": t.id}).all()
        fb = s.execute(text("SELECT rating, comment FROM feedback WHERE tenant_id = :t AND user_subject LIKE "
                            "'erased:%'"), {"t": t.id}).one()
        actors = set(s.execute(text("SELECT actor FROM audit_events WHERE tenant_id = :t AND action = "
                                    "'memory.create'"), {"t": t.id}).scalars())
        on_behalf = s.execute(text("SELECT actor, details FROM audit_events WHERE tenant_id = :t AND action = "
                                   "'gdpr.request.received' AND resource_id = :r"), {"t": t.id, "r": port["id"]}).one()
        acts = s.execute(text("SELECT action FROM audit_events WHERE tenant_id = :t AND action LIKE 'gdpr.request.%' "
                              "AND resource_id = :r ORDER BY seq"), {"t": t.id, "r": erase["id"]}).scalars().all()
        finn_left = s.execute(text("SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                                   "WHERE c.tenant_id = :t AND c.user_subject = :f"), {"t": t.id, "f": finn}).scalar()
    assert usage and all(u.prompt_tokens > 0 for u in usage)
    assert fb.rating == "down" and fb.comment is None
    assert actors and all(a.startswith("erased:") for a in actors)
    # The officer's own record of asking on her behalf keeps the officer; only what named her is pseudonymised.
    assert on_behalf.actor == "cora.compliance" and list(on_behalf.details) == ["erased"]
    assert acts == ["gdpr.request.received", "gdpr.request.processing", "gdpr.request.completed"]
    assert finn_left == 2  # nobody else's data was touched
    # … and the chain still verifies: markers, not edits.
    v = client.get("/v1/audit/verify", headers=_officer(t)).json()
    assert v["ok"] is True and v["redacted"] > 0, v["breaks"]


def _dt(v: str):
    import datetime as dt

    return dt.datetime.fromisoformat(v)


def _export_dirs(t, *ids):
    from compliance import gdpr

    return [gdpr.export_root() / str(t.id) / i for i in ids]
