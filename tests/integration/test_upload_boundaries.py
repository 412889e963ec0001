"""Issue 12 #3 and #6 (re-upload part), through the real upload API, sensor, Dagster job and database:
an upload can never replace, reveal or confirm a document the uploader cannot read; a replacement never
lowers the class or drops an ACL; a re-upload of a failed or stuck document retries it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import document_row

HIDDEN = b"# Recipe R-7\n\nAnneal the housings at 540 C for 4 h, then quench in oil at 60 C.\n"


def _h(tenant, role, groups=(), user=None):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                    role=role, subject=user or f"{role.value}-{'-'.join(groups)}",
                                                    groups=list(groups))}


def _upload(client, tenant, name, data, role, groups=(), **form):
    return client.post("/v1/documents", files={"file": (name, data)}, data=form, headers=_h(tenant, role, groups))


def _row(tenant_id, doc_id) -> dict:
    r = document_row(tenant_id, doc_id)
    return {k: r[k] for k in ("content_hash", "classification", "declared_classification", "acl_groups", "status",
                              "title", "filename", "source_key", "updated_at")}


def test_an_upload_never_replaces_reveals_or_confirms_a_document_the_uploader_cannot_read(client, make_tenant):
    t = make_tenant("ub")
    hidden = _upload(client, t, "recipe.md", HIDDEN, Role.admin, ("qa",), classification="III", acl_groups="qa")
    assert hidden.status_code == 202
    hidden_id = hidden.json()["document_id"]
    before = _row(t.id, hidden_id)

    # An operator without the need-to-know group uploads an exact copy of it (same name, bytes, class, ACL):
    # no `unchanged`, no hidden id — a first upload, as if the hidden document did not exist.
    mallory = ("maint",)
    copy = _upload(client, t, "recipe.md", HIDDEN, Role.operator, mallory, classification="III", acl_groups="qa")
    assert copy.status_code == 202 and copy.json()["unchanged"] is False and copy.json()["status"] == "queued"
    assert hidden_id not in copy.text
    assert _row(t.id, hidden_id) == before  # untouched: content, class, ACL, status

    # The same name declared Class I: the hidden document is not replaced (nor lowered, nor exposed).
    first = _upload(client, t, "recipe.md", b"# Recipe R-7\n\nNothing to see.", Role.operator, mallory,
                    classification="I")
    assert first.status_code == 202 and first.json()["unchanged"] is False and hidden_id not in first.text
    assert _row(t.id, hidden_id) == before
    mine = first.json()["document_id"]
    assert mine not in (hidden_id, copy.json()["document_id"])
    # The same answers whether or not a hidden document has the name (a fresh tenant, no hidden document).
    fresh = make_tenant("ub-fresh")
    for seen, (data, form) in ((first, (b"# Recipe R-7\n\nNothing to see.", {"classification": "I"})),
                               (copy, (HIDDEN, {"classification": "III", "acl_groups": "qa"}))):
        alone = _upload(client, fresh, "recipe.md", data, Role.operator, mallory, **form)
        assert {k: v for k, v in seen.json().items() if k != "document_id"} == \
               {k: v for k, v in alone.json().items() if k != "document_id"}
        assert seen.status_code == alone.status_code
        fresh = make_tenant("ub-fresh")

    # The operator's own document with that name is the one their next uploads resolve to.
    again = _upload(client, t, "recipe.md", b"# Recipe R-7\n\nNothing to see.", Role.operator, mallory,
                    classification="I")
    assert again.status_code == 200 and again.json()["unchanged"] is True and again.json()["document_id"] == mine

    # Role ceiling: an operator *in* the group cannot reach a Class IV document either.
    c4 = _upload(client, t, "export.md", b"# Export item X-1\n\nServo firmware key handling.", Role.admin, ("qa",),
                 classification="IV", acl_groups="qa").json()["document_id"]
    c4_before = _row(t.id, c4)
    r = _upload(client, t, "export.md", b"# Export item X-1\n\nServo firmware key handling.", Role.operator,
                ("qa",), classification="IV", acl_groups="qa")
    assert r.status_code == 202 and c4 not in r.text and _row(t.id, c4) == c4_before

    # Viewers see neither the hidden document nor anything under its id; the operator's copies are theirs.
    listed = client.get("/v1/documents", headers=_h(t, Role.viewer)).json()["items"]
    assert hidden_id not in {d["id"] for d in listed} and mine in {d["id"] for d in listed}
    with tenant_session(t.id) as s:
        names = s.execute(text("SELECT filename, count(*) FROM documents GROUP BY filename")).all()
    assert dict(names)["recipe.md"] == 3  # hidden, the operator's Class I, the operator's Class III copy


def test_a_replacement_keeps_the_class_and_the_acl(client, make_tenant, dagster_env):
    _, run_pipeline, _ = dagster_env
    t = make_tenant("keep")
    d = _upload(client, t, "recipe.md", HIDDEN, Role.admin, ("qa",), classification="III", acl_groups="qa").json()
    # A reader of the document (admin in qa) re-uploads it declaring Class I without an ACL.
    r = _upload(client, t, "recipe.md", b"# Recipe R-7 rev B\n\nAnneal at 545 C.", Role.admin, ("qa",),
                classification="I")
    assert r.status_code == 202 and r.json()["document_id"] == d["document_id"]
    row = _row(t.id, d["document_id"])
    assert (row["declared_classification"], row["classification"], row["acl_groups"]) == (3, 3, ["qa"])
    # The same bytes again with a lower class or fewer groups change nothing.
    same = _upload(client, t, "recipe.md", b"# Recipe R-7 rev B\n\nAnneal at 545 C.", Role.admin, ("qa",),
                   classification="II")
    assert same.status_code == 200 and same.json()["unchanged"] is True
    # Declared groups are added, never swapped: the readers of the replaced version keep it.
    wider = _upload(client, t, "recipe.md", b"# Recipe R-7 rev C\n\nAnneal at 550 C.", Role.admin, ("qa",),
                    classification="III", acl_groups="metallurgy")
    assert wider.json()["document_id"] == d["document_id"]
    assert _row(t.id, d["document_id"])["acl_groups"] == ["metallurgy", "qa"]
    # Through the pipeline it stays Class III: gated for a steward, never indexed as Class I, so it can never
    # reach viewers or the fine-tuning export (which leaves out anything citing Class III/IV).
    assert all(res.success for res in run_pipeline())
    row = document_row(t.id, d["document_id"])
    assert (row["status"], row["classification"]) == ("awaiting_approval", 3)
    assert client.get(f"/v1/documents/{d['document_id']}", headers=_h(t, Role.viewer)).status_code == 404
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM chunks WHERE document_id = :d AND classification < 3"),
                         {"d": d["document_id"]}).scalar() == 0


def test_reupload_of_a_failed_or_stuck_document_retries_it(client, make_tenant, dagster_env):
    _, run_pipeline, _ = dagster_env
    t = make_tenant("retry")
    broken = b"%PDF-1.4\n1 0 obj << garbage"
    d = _upload(client, t, "broken.pdf", broken, Role.operator, ("qa",)).json()
    assert all(res.success for res in run_pipeline())
    assert document_row(t.id, d["document_id"])["status"] == "failed"

    # Failed + the same bytes: queued again (not `unchanged`), with a new run that really happens.
    r = _upload(client, t, "broken.pdf", broken, Role.operator, ("qa",))
    assert r.status_code == 202, r.text
    assert (r.json()["document_id"], r.json()["status"], r.json()["unchanged"], r.json()["retried"]) == \
           (d["document_id"], "queued", False, True)
    row = document_row(t.id, d["document_id"])
    assert (row["status"], row["status_reason"], row["ingest_attempts"]) == ("queued", None, 0)
    runs = run_pipeline()
    assert runs and all(res.success for res in runs)  # the sensor launched it: not `queued` forever
    row = document_row(t.id, d["document_id"])
    assert row["status"] == "failed" and "corrupt PDF" in row["status_reason"]

    # Stuck: its run died mid-parse (status `parsing`, no sign of life for longer than EAP_INGEST_STALE_S).
    good = b"# SOP-9\n\nLock out the press before cleaning the die."
    g = _upload(client, t, "sop-9.md", good, Role.operator, ("qa",)).json()
    assert all(res.success for res in run_pipeline())
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * get_settings().ingest_stale_s)
    with system_session() as s:
        s.execute(text("UPDATE documents SET status = 'parsing', updated_at = :t, queued_at = :t, "
                       "ingest_heartbeat_at = :t, ingest_attempts = 2 WHERE id = :d"),
                  {"t": stale, "d": g["document_id"]})
    r = _upload(client, t, "sop-9.md", good, Role.operator, ("qa",))
    assert r.status_code == 202 and r.json()["retried"] is True and r.json()["document_id"] == g["document_id"]
    assert document_row(t.id, g["document_id"])["ingest_attempts"] == 0
    assert all(res.success for res in run_pipeline())
    assert document_row(t.id, g["document_id"])["status"] == "indexed"

    # In progress and alive (just queued): an unchanged re-upload is still `unchanged`.
    q = _upload(client, t, "fresh.md", b"# Fresh\n\nJust queued.", Role.operator, ("qa",)).json()
    r = _upload(client, t, "fresh.md", b"# Fresh\n\nJust queued.", Role.operator, ("qa",))
    assert r.status_code == 200 and r.json()["unchanged"] is True and r.json()["retried"] is False
    assert r.json()["document_id"] == q["document_id"]
    with tenant_session(t.id) as s:
        actions = s.execute(text("SELECT action FROM audit_events WHERE resource_id IN (:a, :b) "
                                 "AND action = 'document.retry'"), {"a": d["document_id"], "b": g["document_id"]}).all()
    assert len(actions) == 2
