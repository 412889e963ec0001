"""Issue 20: API keys for integrations: created by admins and shown once, stored hashed, scoped (role ceiling,
allowed endpoints; never the admin API), expiring, revocable, last use recorded, usable wherever a bearer
token is. Scope and revocation are checked against every route of the app."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from identity.tenancy import ensure_user
from tests.builders import bearer

PUBLIC = ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/metrics", "/v1/auth/")


@pytest.fixture
def tenant(make_tenant):
    t = make_tenant("keys")
    ensure_user(t, "ada", Role.admin)
    return t


def _admin(t):
    return bearer(t, "ada", Role.admin)


def _key(client, t, **body):
    body = {"name": f"k-{uuid.uuid4().hex[:6]}", "allowed_prefixes": ["/v1/me"], **body}
    r = client.post("/v1/admin/api-keys", json=body, headers=_admin(t))
    assert r.status_code == 201, r.text
    return r.json()


def _routes(client):
    """(method, concrete path) of every authenticated API route (from the OpenAPI schema), path parameters
    filled with fresh ids."""
    out = []
    for path, ops in client.app.openapi()["paths"].items():
        if not path.startswith("/v1/") or path.startswith(PUBLIC):
            continue
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        out += [(method.upper(), concrete) for method in ops if method in ("get", "post", "put", "patch", "delete")]
    assert len(out) > 20
    return out


def _audit(t, action):
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT outcome, details FROM audit_events WHERE tenant_id = :t AND action = :a "
                              "ORDER BY seq"), {"t": str(t.id), "a": action}).mappings().all()


def test_a_key_is_shown_once_stored_hashed_and_works_like_a_token(client, tenant):
    t = tenant
    made = _key(client, t, role="operator", groups=["qa"], allowed_prefixes=["/v1/me", "/v1/conversations"])
    secret = made["key"]
    assert secret.startswith("eapk_") and made["prefix"] in secret
    listed = client.get("/v1/admin/api-keys", headers=_admin(t)).json()
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    with tenant_session(t.id) as s:
        stored = s.execute(text("SELECT key_hash FROM api_keys WHERE id = :i"), {"i": made["id"]}).scalar()
        assert secret not in str(s.execute(text("SELECT row_to_json(k) FROM api_keys k")).all())
    tenant_part, raw = secret[len("eapk_"):][:32], secret[len("eapk_") + 33:]
    assert tenant_part == t.id.hex and stored == hashlib.sha256(raw.encode()).hexdigest()

    headers = {"Authorization": f"Bearer {secret}"}
    me = client.get("/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "operator" and me.json()["groups"] == ["qa"] and me.json()["permissions"] == []
    assert client.get("/v1/conversations", headers=headers).status_code == 200
    used = client.get("/v1/admin/api-keys", headers=_admin(t)).json()[0]["last_used_at"]
    assert used is not None and dt.datetime.fromisoformat(used) > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    # A changed character, or the same secret under another tenant's id, is no key.
    for forged in (secret[:-1] + ("A" if secret[-1] != "A" else "B"),
                   f"eapk_{uuid.uuid4().hex}_{raw}", "eapk_short"):
        r = client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text


def test_a_keys_scope_holds_on_every_endpoint(client, tenant):
    t = tenant
    admin_key = {"Authorization": "Bearer " + _key(client, t, role="admin", allowed_prefixes=["/v1/me"])["key"]}
    for method, path in _routes(client):
        r = client.request(method, path, headers=admin_key, json={})
        if path == "/v1/me":
            assert r.status_code == 200, (method, path, r.text)
            continue
        expected = "api_key_not_allowed" if path.startswith("/v1/admin") else "api_key_scope"
        assert r.status_code == 403 and r.json()["error"]["code"] == expected, (method, path, r.status_code, r.text)
    r = client.post("/mcp", headers=admin_key, json={})  # the MCP endpoint is outside the scope too
    assert r.status_code == 403 and r.json()["error"]["code"] == "api_key_scope", r.text
    denied = [row["details"]["code"] for row in _audit(t, "auth.api_key")]
    assert "api_key_scope" in denied and "api_key_not_allowed" in denied
    # The role is a ceiling inside the scope too: a viewer key cannot acknowledge alerts.
    viewer = {"Authorization": "Bearer " + _key(client, t, role="viewer", allowed_prefixes=["/v1/alerts"])["key"]}
    r = client.post(f"/v1/alerts/{uuid.uuid4()}/acknowledge", headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    assert client.get("/v1/alerts", headers=viewer).status_code == 200
    # A prefix matches whole path segments only.
    assert client.get("/v1/alerts-rules-like", headers=viewer).status_code in (403, 404)


def test_bad_key_requests_are_refused_and_audited(client, tenant, make_tenant):
    t = tenant
    for body, code in (({"role": "root"}, "unknown_role"), ({"allowed_prefixes": ["/v1/admin"]}, "invalid_scope"),
                       ({"allowed_prefixes": ["/v1/../v1/admin/users"]}, "invalid_scope"),
                       ({"allowed_prefixes": ["/v1"]}, "invalid_scope")):
        r = client.post("/v1/admin/api-keys", json={"name": "bad", "allowed_prefixes": ["/v1/me"], **body},
                        headers=_admin(t))
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert [row["details"]["code"] for row in _audit(t, "api_key.create") if row["outcome"] == "denied"] == [
        "unknown_role", "invalid_scope", "invalid_scope", "invalid_scope"]
    r = client.post("/v1/admin/api-keys", json={"name": "long", "allowed_prefixes": ["/v1/me"],
                                                "expires_in_days": 5000}, headers=_admin(t))
    assert r.status_code == 422
    # Non-admins cannot create keys, and keys never create keys.
    assert client.post("/v1/admin/api-keys", json={"name": "x", "allowed_prefixes": ["/v1/me"]},
                       headers=bearer(t, "olaf", Role.operator)).status_code == 403
    # Another tenant's admin cannot revoke (or see) this tenant's keys.
    k = _key(client, t)
    other = make_tenant("keys")
    assert client.delete(f"/v1/admin/api-keys/{k['id']}", headers=bearer(other, "eve", Role.admin)).status_code == 404
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {k['key']}"}).status_code == 200


def test_revoked_and_expired_keys_stop_working_on_every_endpoint(client, tenant):
    t = tenant
    revoked = _key(client, t, role="admin", allowed_prefixes=["/v1/me", "/v1/usage"])
    expired = _key(client, t, role="admin", allowed_prefixes=["/v1/me", "/v1/usage"])
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {revoked['key']}"}).status_code == 200
    r = client.delete(f"/v1/admin/api-keys/{revoked['id']}", headers=_admin(t))
    assert r.status_code == 200 and r.json()["revoked_by"] == "ada"
    with tenant_session(t.id) as s:
        s.execute(text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :i"),
                  {"i": expired["id"]})
    for key, code in ((revoked, "api_key_revoked"), (expired, "api_key_expired")):
        headers = {"Authorization": f"Bearer {key['key']}"}
        for method, path in _routes(client):
            r = client.request(method, path, headers=headers, json={})
            assert r.status_code == 401 and r.json()["error"]["code"] == code, (method, path, r.text)
    codes = {row["details"]["code"] for row in _audit(t, "auth.api_key") if row["outcome"] == "denied"}
    assert {"api_key_revoked", "api_key_expired"} <= codes
    assert [row["outcome"] for row in _audit(t, "api_key.revoke")] == ["success"]
