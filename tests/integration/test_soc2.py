"""Issue 15 #4: the SOC 2 evidence export opens, its manifest's hashes match its files, it holds each section
with the tenant's real records (and no credentials), and it is bound to the audit trail."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile

from sqlalchemy import text

from compliance import approvals
from core.db.database import system_session, tenant_session
from core.models import Alert, AlertRule, Document, Role
from tests.builders import bearer, ensure_steward, index_plant

SECTIONS = {"access_review", "changes", "approvals", "audit", "incidents", "ai_usage"}


def _user(t, username: str, role: str, permissions=(), active=True, password_hash=None) -> None:
    with system_session() as s:
        s.execute(text("INSERT INTO users (id, tenant_id, username, role, permissions, is_active, password_hash) "
                       "VALUES (:i, :t, :u, :r, :p, :a, :h)"),
                  {"i": uuid.uuid4(), "t": t.id, "u": username, "r": role, "p": list(permissions), "a": active,
                   "h": password_hash})


def _steward_decision(client, t) -> tuple[uuid.UUID, str]:
    """A Class III document approved by a steward through an approval token, as the steward_review run does."""
    doc_id = uuid.uuid4()
    with tenant_session(t.id) as s:
        s.add(Document(id=doc_id, tenant_id=t.id, source_key=f"soc2:{doc_id}", title="Recipe HT-9",
                       filename="ht9.md", content_hash="h-soc2", storage_path="/dev/null", declared_classification=3,
                       classification=3, acl_groups=["qa"], status="awaiting_approval", review_status="pending",
                       created_by="uploader"))
    ensure_steward(t.id, "sam.steward", "operator", ["qa"])
    r = client.post(f"/v1/documents/{doc_id}/review-token", json={"decision": "approve", "reason": "recipe checked"},
                    headers=bearer(t, "sam.steward", Role.operator, ("qa",)))
    assert r.status_code == 201, r.text
    approvals.consume_review(r.json()["approval_token"], tenant_id=t.id, document_id=doc_id, content_hash="h-soc2",
                             decision="approve", reason="recipe checked", run_id="soc2-run", class_name="III")
    return doc_id, r.json()["approval_token"]


def test_soc2_export_opens_hashes_match_and_every_section_is_there(client, make_tenant):
    t = make_tenant("soc2")
    other = make_tenant("soc2-other")
    _user(t, "ada", "admin", password_hash="$argon2id$secret-hash")
    _user(t, "cora", "viewer", ["compliance_officer"])
    _user(t, "old.timer", "operator", active=False)
    index_plant(t)
    doc_id, token = _steward_decision(client, t)
    with tenant_session(t.id) as s:
        rule = AlertRule(id=uuid.uuid4(), tenant_id=t.id, name="downtime", kind="downtime_minutes", threshold=30)
        s.add(rule)
        s.flush()
        s.add(Alert(tenant_id=t.id, rule_id=rule.id, subject="M-7", severity="critical", message="M-7 down 45 min"))
    assert client.post("/v1/chat", json={"message": "hydraulic oil change interval for press P3"},
                       headers=bearer(t, "olaf", Role.operator)).status_code == 200
    assert client.get("/v1/compliance/dashboard", headers=bearer(t, "olaf", Role.operator)).status_code == 403

    officer = bearer(t, "cora", Role.viewer)
    assert client.post("/v1/compliance/soc2-exports", json={}, headers=bearer(t, "olaf", Role.operator)).status_code \
        == 403
    r = client.post("/v1/compliance/soc2-exports", json={}, headers=officer)
    assert r.status_code == 201, r.text
    out = r.json()
    got = client.get(out["download"], headers=officer)
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    assert hashlib.sha256(got.content).hexdigest() == out["sha256"]

    z = zipfile.ZipFile(io.BytesIO(got.content))
    manifest_blob = z.read("manifest.json")
    assert hashlib.sha256(manifest_blob).hexdigest() == out["manifest_sha256"]
    manifest = json.loads(manifest_blob)
    assert manifest["tenant"] == t.name and manifest["generated_by"] == "cora"
    listed = {f["path"] for f in manifest["files"]}
    assert listed == set(z.namelist()) - {"manifest.json"}
    for f in manifest["files"]:  # every file's hash and size as the manifest says
        blob = z.read(f["path"])
        assert hashlib.sha256(blob).hexdigest() == f["sha256"] and len(blob) == f["bytes"], f["path"]
    assert {f["section"] for f in manifest["files"]} == SECTIONS
    assert all(manifest["sections"][s] for s in SECTIONS)

    def read(path: str):
        return json.loads(z.read(path))

    users = {u["username"]: u for u in read("access_review/users.json")}
    assert {"ada", "cora", "old.timer", "sam.steward"} <= set(users)
    assert users["cora"]["permissions"] == ["compliance_officer"] and users["old.timer"]["is_active"] is False
    assert "secret-hash" not in z.read("access_review/users.json").decode()
    assert not any("password" in k or "totp" in k for u in users.values() for k in u)
    summary = read("access_review/summary.json")
    assert summary["inactive"] == ["old.timer"] and "ada" in summary["admins"]

    assert read("changes/index_versions.json")[0]["status"] == "active"
    assert read("changes/models.json")["llm_models_used"]
    decisions = read("approvals/steward_decisions.json")
    approved = [d for d in decisions["decisions"] if d["action"] == "document.review.approved"]
    assert [(d["actor"], d["resource_id"]) for d in approved] == [("sam.steward", str(doc_id))]
    assert decisions["approval_tokens"][0]["used_by_run"] == "soc2-run"
    assert token not in z.read("approvals/steward_decisions.json").decode()  # the credential itself never
    assert read("audit/verification.json")["ok"] is True
    assert [a["subject"] for a in read("incidents/alerts.json")["alerts"]] == ["M-7"]
    usage = read("ai_usage/usage.json")
    assert sum(row["answers"] for row in usage["answers"]) == 1
    assert any(row["action"] == "access.denied" for row in usage["refused_or_failed_requests"])

    # The export is itself on the record, with the manifest's hash; another tenant cannot fetch it.
    with tenant_session(t.id) as s:
        event = s.execute(text("SELECT actor, details FROM audit_events WHERE action = 'compliance.soc2.exported' "
                               "AND resource_id = :i"), {"i": out["id"]}).one()
    assert event.actor == "cora" and event.details["manifest_sha256"] == out["manifest_sha256"]
    assert client.get(out["download"], headers=bearer(other, "ada", Role.admin)).status_code == 404
    # A bad period is a clear 422.
    bad = client.post("/v1/compliance/soc2-exports", json={"since": "2026-01-02T00:00:00Z",
                                                           "until": "2026-01-01T00:00:00Z"}, headers=officer)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_period")
