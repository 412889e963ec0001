"""Issue 20: OIDC users are provisioned just in time; a per-tenant mapping from IdP groups/claims gives role,
permissions and need-to-know groups (and changes the role at the next sign-in when the groups change);
mappings that would grant admin to everyone are refused and audited. Tokens come from a local JWKS."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.settings import get_settings
from identity.tenancy import ensure_user
from tests.builders import bearer, local_jwks

ISS, AUD = "https://login.plant.local/realms/eap", "eap-api"
MAPPING = {"rules": [{"claim": "groups", "value": "plant-admins", "role": "admin"},
                     {"claim": "groups", "value": "qa-team", "role": "operator", "permissions": ["approver"],
                      "groups": ["qa"]},
                     {"claim": "department", "value": "R&D", "groups": ["rnd"]}],
           "default_role": "viewer"}


@pytest.fixture
def oidc(rsa_key, tmp_path, monkeypatch):
    local_jwks(monkeypatch, tmp_path, rsa_key, kid="k1", issuer=ISS, audience=AUD)
    yield
    get_settings.cache_clear()


@pytest.fixture
def tenant(make_tenant):
    t = make_tenant("idp")
    ensure_user(t, "ada", Role.admin)
    return t


def _token(rsa_key, t, sub="olga", age_s=0, **claims):
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    body = {"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "nbf": now, "exp": now + dt.timedelta(minutes=5),
            "tenant": t.name, **claims}
    return {"Authorization": "Bearer " + jwt.encode(body, rsa_key, algorithm="RS256", headers={"kid": "k1"})}


def _admin(t):
    return bearer(t, "ada", Role.admin)


def _audit(t, prefix):
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT action, outcome, actor, details FROM audit_events WHERE tenant_id = :t "
                              "AND action LIKE :p ORDER BY seq"), {"t": str(t.id), "p": f"{prefix}%"}).mappings().all()


def test_group_mapping_provisions_the_user_and_changes_its_role_on_the_next_sign_in(client, oidc, rsa_key, tenant):
    t = tenant
    r = client.put("/v1/admin/idp-mapping", json=MAPPING, headers=_admin(t))
    assert r.status_code == 200, r.text
    assert client.get("/v1/admin/idp-mapping", headers=_admin(t)).json()["rules"][1]["permissions"] == ["approver"]

    # First sign-in: provisioned just in time with the mapped role, permissions and groups. The roles claim
    # is not consulted once the tenant has a mapping.
    first = _token(rsa_key, t, groups=["qa-team", "unmapped"], department="R&D", roles=["admin"])
    me = client.get("/v1/me", headers=first).json()
    assert (me["subject"], me["role"], me["groups"], me["permissions"]) == ("olga", "operator", ["qa", "rnd"],
                                                                            ["approver"])
    users = {u["username"]: u for u in client.get("/v1/admin/users", headers=_admin(t)).json()}
    olga = users[f"oidc:{ISS}#olga"]
    assert (olga["source"], olga["role"], olga["groups"]) == ("oidc", "operator", ["qa", "rnd"])
    # The same token again changes nothing and provisions nobody twice.
    assert client.get("/v1/me", headers=first).status_code == 200
    assert [a["action"] for a in _audit(t, "user.")] == ["user.create", "user.provision"]

    # The IdP moves her to the admins: the next sign-in (a new token) carries the new role.
    second = _token(rsa_key, t, groups=["plant-admins"])
    me = client.get("/v1/me", headers=second).json()
    assert me["role"] == "admin" and me["groups"] == [] and "steward" in me["permissions"]
    synced = _audit(t, "user.idp_sync")
    assert len(synced) == 1 and synced[0]["details"]["changes"]["role"] == {"from": "operator", "to": "admin"}
    # Out of every mapped group: the default role.
    assert client.get("/v1/me", headers=_token(rsa_key, t, groups=["visitors"])).json()["role"] == "viewer"

    # The role of an IdP user is the mapping's: an admin changes the mapping, not the user.
    r = client.patch(f"/v1/admin/users/{olga['id']}", json={"role": "admin"}, headers=_admin(t))
    assert r.status_code == 409 and r.json()["error"]["code"] == "managed_by_idp"
    # Deactivated: the IdP's tokens no longer get in, old or new.
    assert client.delete(f"/v1/admin/users/{olga['id']}", headers=_admin(t)).status_code == 200
    for headers in (second, _token(rsa_key, t, groups=["plant-admins"], age_s=1)):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "user_deactivated"
    assert any(a["outcome"] == "denied" for a in _audit(t, "auth.signin"))


def test_no_mapped_role_means_no_access(client, oidc, rsa_key, tenant):
    t = tenant
    mapping = {"rules": [{"claim": "groups", "value": "qa-team", "role": "operator"}]}
    assert client.put("/v1/admin/idp-mapping", json=mapping, headers=_admin(t)).status_code == 200
    r = client.get("/v1/me", headers=_token(rsa_key, t, sub="ivan", groups=["visitors"], roles=["admin"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "no_mapped_role"
    assert [a["details"]["code"] for a in _audit(t, "auth.signin")] == ["no_mapped_role"]
    assert all(u["username"] == "ada" for u in client.get("/v1/admin/users", headers=_admin(t)).json())


def test_without_a_mapping_the_roles_claim_applies_and_users_are_still_provisioned(client, oidc, rsa_key, tenant):
    t = tenant
    me = client.get("/v1/me", headers=_token(rsa_key, t, sub="carl", roles=["operator", "steward"],
                                             groups=["qa"])).json()
    assert (me["role"], me["groups"], me["permissions"]) == ("operator", ["qa"], ["steward"])
    users = {u["username"]: u for u in client.get("/v1/admin/users", headers=_admin(t)).json()}
    assert users[f"oidc:{ISS}#carl"]["permissions"] == ["steward"]


@pytest.mark.parametrize(("mapping", "code"), [
    ({"rules": [], "default_role": "admin"}, "mapping_grants_everyone"),
    ({"rules": [{"claim": "groups", "value": "*", "role": "admin"}]}, "mapping_grants_everyone"),
    ({"rules": [{"claim": "groups", "value": "  ", "role": "admin"}]}, "mapping_grants_everyone"),
    ({"rules": [{"claim": "iss", "value": ISS, "role": "admin"}]}, "mapping_grants_everyone"),
    ({"rules": [{"claim": "groups", "value": "x", "role": "root"}]}, "unknown_role"),
    ({"rules": [{"claim": "groups", "value": "x", "permissions": ["god"]}]}, "invalid_mapping"),
    ({"rules": [{"claim": "groups", "value": "x"}]}, "invalid_mapping"),
])
def test_mappings_that_would_grant_admin_to_everyone_or_are_invalid_are_refused(client, tenant, mapping, code):
    t = tenant
    r = client.put("/v1/admin/idp-mapping", json=mapping, headers=_admin(t))
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    refused = _audit(t, "tenant.settings.idp_mapping")
    assert [(a["outcome"], a["details"]["code"]) for a in refused] == [("denied", code)]
    assert client.get("/v1/admin/idp-mapping", headers=_admin(t)).json() == {"rules": [], "default_role": None}
