"""Issue 15 #2: a destruction hold blocks deleting a document through the API. Under a document hold or a tenant
hold, DELETE /v1/documents/{id} is refused with 409 `held` naming the holds, nothing is removed, and the refusal is
an audit record (`hold.blocked`, outcome denied, in its own transaction); once the holds are released the same
DELETE works and is audited as a deletion."""

from __future__ import annotations

from sqlalchemy import text

from core.db.database import system_session
from tests.builders import chunk_rows, index_document, upload_headers
from tests.builders import officer_headers as _officer


def _doc_count(t, doc_id) -> int:
    with system_session() as s:
        return int(s.execute(text("SELECT count(*) FROM documents WHERE id = :i AND tenant_id = :t"),
                             {"i": doc_id, "t": t.id}).scalar_one())


def _events(t, action: str) -> list:
    with system_session() as s:
        return s.execute(text("SELECT actor, actor_role, outcome, resource_id, details FROM audit_events "
                              "WHERE tenant_id = :t AND action = :a ORDER BY seq"), {"t": t.id, "a": action}).all()


def test_document_delete_refused_under_hold_until_released(client, make_tenant):
    t = make_tenant("docheld")
    other = make_tenant("docfree")
    doc = index_document(t, "press-manual", 1, [], "Press P3: change the hydraulic oil every 4000 hours.")
    free = index_document(other, "press-manual", 1, [], "Press P3: change the hydraulic oil every 4000 hours.")
    op = upload_headers(t)

    r = client.post("/v1/holds", json={"scope": "document", "target": str(doc), "reason": "supplier dispute D-4"},
                    headers=_officer(t))
    assert r.status_code == 201
    doc_hold = r.json()["id"]

    r = client.delete(f"/v1/documents/{doc}", headers=op)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "held" and "supplier dispute D-4" in err["message"]
    assert [(h["id"], h["scope"], h["target"]) for h in err["details"]["holds"]] == [(doc_hold, "document", str(doc))]
    assert _doc_count(t, doc) == 1 and chunk_rows(t.id, doc)  # nothing removed
    blocked = _events(t, "hold.blocked")
    assert len(blocked) == 1
    assert blocked[0].outcome == "denied" and blocked[0].actor == "operator@t"
    assert blocked[0].resource_id == f"DELETE /v1/documents/{doc}"
    assert [h["id"] for h in blocked[0].details["holds"]] == [doc_hold]
    assert not _events(t, "document.delete")

    # A hold on another tenant's document does not reach this one, and a document hold covers that document only.
    assert client.delete(f"/v1/documents/{free}", headers=upload_headers(other)).status_code == 204

    # A tenant hold covers every document of the tenant; releasing the document hold alone is not enough.
    r = client.post("/v1/holds", json={"scope": "tenant", "reason": "regulator inquiry R-2"}, headers=_officer(t))
    assert r.status_code == 201
    tenant_hold = r.json()["id"]
    assert client.post(f"/v1/holds/{doc_hold}/release", json={"reason": "dispute settled"},
                       headers=_officer(t)).status_code == 200
    r = client.delete(f"/v1/documents/{doc}", headers=op)
    assert r.status_code == 409 and [h["id"] for h in r.json()["error"]["details"]["holds"]] == [tenant_hold]
    assert _doc_count(t, doc) == 1 and len(_events(t, "hold.blocked")) == 2

    # Released: the same request deletes, and the deletion is audited.
    assert client.post(f"/v1/holds/{tenant_hold}/release", json={"reason": "inquiry closed"},
                       headers=_officer(t)).status_code == 200
    assert client.delete(f"/v1/documents/{doc}", headers=op).status_code == 204
    assert _doc_count(t, doc) == 0 and not chunk_rows(t.id, doc)
    (deleted,) = _events(t, "document.delete")
    assert deleted.actor == "operator@t" and deleted.resource_id == str(doc)
    with system_session() as s:
        acts = s.execute(text("SELECT action FROM audit_events WHERE tenant_id = :t AND (action LIKE 'hold.%' "
                              "OR action = 'document.delete') ORDER BY seq"), {"t": t.id}).scalars().all()
    assert acts == ["hold.placed", "hold.blocked", "hold.placed", "hold.released", "hold.blocked", "hold.released",
                    "document.delete"]


def _process_gdpr() -> None:
    """One tick of the gdpr_requests sensor, then the run it asked for (as the daemon would)."""
    import dagster as dg

    import definitions
    from sensors.compliance import gdpr_requests

    inst = dg.DagsterInstance.ephemeral()
    db = definitions.defs.resources["db"]
    res = gdpr_requests(dg.build_sensor_context(instance=inst, resources={"db": db}))
    assert not isinstance(res, dg.SkipReason)
    assert definitions.defs.resolve_job_def("process_gdpr_requests").execute_in_process(
        instance=inst, tags=res.tags, resources={"db": db}).success


def test_erasure_and_retention_respect_conversation_and_document_holds(client, make_tenant):
    """A hold on one of the person's conversations refuses their erasure (with the hold named) until released; the
    retention pass keeps a held document's superseded versions and removes another document's."""
    import datetime as dt
    import os
    import uuid

    from compliance import retention
    from core.models import Conversation
    from core.settings import get_settings

    t = make_tenant("heldmisc")
    conv = uuid.uuid4()
    with system_session() as s:
        s.add(Conversation(id=conv, tenant_id=t.id, user_subject="hank.held", title="hank.held asks"))
    r = client.post("/v1/holds", json={"scope": "conversation", "target": str(conv), "reason": "incident I-9"},
                    headers=_officer(t))
    conv_hold = r.json()["id"]
    first = client.post("/v1/gdpr/requests", json={"kind": "erasure", "subject": "hank.held"},
                        headers=_officer(t)).json()
    _process_gdpr()
    got = client.get(f"/v1/gdpr/requests/{first['id']}", headers=_officer(t)).json()
    assert got["status"] == "refused" and got["result"]["holds"] == [conv_hold]
    assert "incident I-9" in got["result"]["reason"]
    with system_session() as s:
        assert s.execute(text("SELECT user_subject FROM conversations WHERE id = :i"), {"i": conv}).scalar() \
            == "hank.held"
    assert client.post(f"/v1/holds/{conv_hold}/release", json={"reason": "closed"},
                       headers=_officer(t)).status_code == 200
    second = client.post("/v1/gdpr/requests", json={"kind": "erasure", "subject": "hank.held"},
                         headers=_officer(t)).json()
    _process_gdpr()
    assert client.get(f"/v1/gdpr/requests/{second['id']}", headers=_officer(t)).json()["status"] == "completed"
    with system_session() as s:
        assert not s.execute(text("SELECT count(*) FROM conversations WHERE tenant_id = :t AND "
                                  "user_subject = 'hank.held'"), {"t": t.id}).scalar()

    # Superseded document versions (stage products of an older content hash), one document held.
    held_doc = index_document(t, "held-spec", 1, [], "Torque spec for bolt M8: 25 Nm.")
    free_doc = index_document(t, "free-spec", 1, [], "Torque spec for bolt M10: 49 Nm.")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=400)).timestamp()
    folders = {}
    for doc in (held_doc, free_doc):
        root = get_settings().pipeline_dir / str(doc)
        current, superseded = root / f"h-{doc}"[:16], root / "0123456789abcdef"
        for f in (current, superseded):
            f.mkdir(parents=True, exist_ok=True)
            (f / "parsed.json").write_text("{}")
            os.utime(f, (old, old))
        folders[doc] = (current, superseded)
    assert client.post("/v1/holds", json={"scope": "document", "target": str(held_doc), "reason": "warranty claim"},
                       headers=_officer(t)).status_code == 201
    with system_session() as s:
        rep = {x.record_type: x for x in retention.apply(s, t.id).types}["document_versions"]
    assert folders[held_doc][1].is_dir() and not folders[free_doc][1].exists()
    assert all(folders[d][0].is_dir() for d in folders)  # the current version is never a superseded one
    assert rep.held_ids == [f"{held_doc}/0123456789abcdef"] and rep.affected_ids == [f"{free_doc}/0123456789abcdef"]
