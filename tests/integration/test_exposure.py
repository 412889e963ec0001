"""Issue 12 #11 (parts): deleting a document deletes its original and its stage files; alert listings do
not show webhook secrets. Through the real API, Dagster job, database and file system."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Alert, Role
from core.security import mint_token
from core.settings import get_settings
from ingestion.filestore import FileStore
from monitoring.dispatch import dispatch
from tests.builders import Webhook


def _h(tenant, role=Role.operator, groups=("qa",)):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                    role=role, subject=f"{role.value}@x", groups=list(groups))}


def _upload(client, tenant, name, data, **form):
    r = client.post("/v1/documents", files={"file": (name, data)}, data=form, headers=_h(tenant))
    assert r.status_code in (200, 202), r.text
    return r.json()


def _original(sha: str):
    return FileStore(get_settings().file_store_dir).path_for(sha)


def test_delete_removes_the_original_and_stage_files_unless_another_document_shares_it(
        client, make_tenant, dagster_env):
    _, run_pipeline, _ = dagster_env
    a, b = make_tenant("del-a"), make_tenant("del-b")
    body = f"# Shared {uuid.uuid4().hex}\n\nPress P7 torque is 45 Nm.".encode()
    da, db = _upload(client, a, "x.md", body), _upload(client, b, "y.md", body)
    assert da["content_hash"] == db["content_hash"]
    secret = _upload(client, a, "c3.md", f"# Recipe {uuid.uuid4().hex}\n\nAnneal at 540 C.".encode(),
                     classification="III", acl_groups="qa")
    assert all(r.success for r in run_pipeline())
    stages = get_settings().pipeline_dir / secret["document_id"]
    assert any(p.is_file() for p in stages.rglob("*"))  # awaiting approval: its sanitised text is staged
    assert _original(da["content_hash"]).exists() and _original(secret["content_hash"]).exists()

    # Class III document: original and stage files go with it.
    assert client.delete(f"/v1/documents/{secret['document_id']}", headers=_h(a)).status_code == 204
    assert not _original(secret["content_hash"]).exists() and not stages.exists()

    # The same bytes in another tenant: the original stays until the last reference is deleted.
    assert client.delete(f"/v1/documents/{da['document_id']}", headers=_h(a)).status_code == 204
    assert _original(da["content_hash"]).exists()
    assert client.get(f"/v1/documents/{db['document_id']}", headers=_h(b)).json()["status"] == "indexed"
    assert client.delete(f"/v1/documents/{db['document_id']}", headers=_h(b)).status_code == 204
    assert not _original(db["content_hash"]).exists()
    with tenant_session(a.id) as s:
        ev = s.execute(text("SELECT details FROM audit_events WHERE action = 'document.delete' AND resource_id = :d"),
                       {"d": secret["document_id"]}).scalar_one()
    assert ev["sha256"] == secret["content_hash"]


def test_a_replaced_version_does_not_linger_in_the_store(client, make_tenant):
    t = make_tenant("repl")
    v1 = _upload(client, t, "spec.md", f"# Spec {uuid.uuid4().hex}\n\nHardness 58 HRC.".encode())
    v2 = _upload(client, t, "spec.md", f"# Spec {uuid.uuid4().hex}\n\nHardness 60 HRC.".encode())
    assert v2["document_id"] == v1["document_id"]
    assert not _original(v1["content_hash"]).exists() and _original(v2["content_hash"]).exists()


def test_alert_listing_never_shows_webhook_secrets(client, make_tenant):
    t = make_tenant("hooks")
    hook = Webhook()
    try:
        secret_url = f"{hook.url}/services/T0001/B0002/Zk9sZWN0ZWRTZWNyZXQ?sig=c2lnbmF0dXJl"
        rules = {"rules": [{"name": "downtime", "kind": "downtime_minutes", "threshold": 30,
                            "channels": {"webhooks": [secret_url], "emails": ["lead@plant.local"]}}]}
        r = client.put("/v1/alert-rules", json=rules, headers=_h(t, Role.admin))
        assert r.status_code == 200, r.text
        rule_id = r.json()[0]["id"]
        with tenant_session(t.id) as s:
            alert = Alert(id=uuid.uuid4(), tenant_id=t.id, rule_id=uuid.UUID(rule_id), subject="P3", status="open",
                          severity="warning", value=42.0, message="P3 down for 42 min", evidence={})
            s.add(alert)
            s.flush()
            s.expunge(alert)
        # The real dispatcher posts to the hook (delivered) and records the delivery.
        assert dispatch(t.id, alert, {"webhooks": [secret_url]}, "opened") == ["webhook:delivered"]
        assert len(hook.posts) == 1
    finally:
        hook.srv.shutdown()
    for role in (Role.viewer, Role.operator, Role.admin):
        r = client.get("/v1/alerts", headers=_h(t, role))
        assert r.status_code == 200
        for token in ("Zk9sZWN0ZWRTZWNyZXQ", "c2lnbmF0dXJl", "/services/", "T0001"):
            assert token not in r.text, (role, token)
        (delivery,) = r.json()[0]["deliveries"]
        assert delivery["target"].startswith(f"http://127.0.0.1:{hook.srv.server_port}/")
        assert "sha256:" in delivery["target"] and delivery["status"] == "delivered"
    # The full URL is in the admin-only rule settings, for whoever configures the integration.
    assert client.get("/v1/alert-rules", headers=_h(t, Role.viewer)).status_code == 403
    assert secret_url in client.get("/v1/alert-rules", headers=_h(t, Role.admin)).text
