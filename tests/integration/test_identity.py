"""Security issue 12, findings 4 (identity part) and 12 (tokens): identity is (issuer, subject), an
empty subject authenticates nobody, tokens have a maximum lifetime, and an IdP's singular `role`
claim does not override the configured roles claim."""

from __future__ import annotations

import datetime as dt
import uuid

import jwt
import pytest

from core.errors import InvalidInput
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import local_jwks

ISS, AUD = "https://login.plant.local/realms/eap", "eap-api-prod"


@pytest.fixture
def oidc(rsa_key, tmp_path, monkeypatch):
    local_jwks(monkeypatch, tmp_path, rsa_key, kid="rsa-1", issuer=ISS, audience=AUD)
    yield
    get_settings.cache_clear()


def _oidc(rsa_key, tenant, **over) -> dict:
    now = dt.datetime.now(dt.UTC)
    claims = {"iss": ISS, "aud": AUD, "sub": "olga", "iat": now, "nbf": now, "exp": now + dt.timedelta(minutes=5),
              "tenant": tenant.name, "roles": ["operator"], "groups": ["qa"], **over}
    claims = {k: v for k, v in claims.items() if v is not None}
    tok = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    return {"Authorization": f"Bearer {tok}"}


def _platform(tenant, subject="olga", role=Role.operator, **over) -> dict:
    s = get_settings()
    now = dt.datetime.now(dt.UTC)
    claims = {"iss": s.jwt_issuer, "aud": s.jwt_audience, "sub": subject, "iat": now, "nbf": now,
              "exp": now + dt.timedelta(minutes=5), "tid": str(tenant.id), "tenant": tenant.name, "role": role.value,
              "groups": ["qa"], **over}
    claims = {k: v for k, v in claims.items() if v is not None}
    return {"Authorization": "Bearer " + jwt.encode(claims, s.jwt_signing_secret(), algorithm="HS256")}


def test_an_idp_user_whose_sub_equals_a_platform_username_is_another_principal(client, rsa_key, oidc, make_tenant):
    t = make_tenant("ident")
    olga = _platform(t)
    chat = client.post("/v1/chat", json={"message": "What is the sum of 120 and 80 parts?"}, headers=olga)
    assert chat.status_code == 200, chat.text
    assert client.post("/v1/memories", json={"type": "FACT", "content": "our line 3 uses SOP-114"},
                       headers=olga).status_code == 201
    assert client.post("/v1/goals", json={"text": "Reduce scrap on line 2"}, headers=olga).status_code == 201
    assert len(client.get("/v1/conversations", headers=olga).json()) == 1

    impostor = _oidc(rsa_key, t)  # an IdP user with sub "olga"
    me = client.get("/v1/me", headers=impostor).json()
    assert me["subject"] == "olga" and me["role"] == "operator"  # the token's sub, as before
    assert client.get("/v1/conversations", headers=impostor).json() == []
    assert client.get(f"/v1/conversations/{chat.json()['conversation_id']}", headers=impostor).status_code == 404
    assert client.get(f"/v1/traces/{chat.json()['trace_id']}", headers=impostor).status_code == 404
    assert client.get("/v1/memories", headers=impostor).json()["total"] == 0
    assert client.get("/v1/goals", headers=impostor).json()["total"] == 0
    fb = client.post("/v1/feedback", json={"message_id": chat.json()["message_id"], "rating": "down"}, headers=impostor)
    assert fb.status_code == 404, fb.text
    # And the other way round: the IdP user's conversations are its own.
    mine = client.post("/v1/chat", json={"message": "What is the sum of 1 and 2 parts?"}, headers=impostor)
    assert mine.status_code == 200
    assert [c["id"] for c in client.get("/v1/conversations", headers=impostor).json()] == [
        mine.json()["conversation_id"]]
    assert len(client.get("/v1/conversations", headers=olga).json()) == 1
    # A platform token cannot claim the IdP's namespace.
    forged = _platform(t, subject=f"oidc:{ISS}#olga")
    assert client.get("/v1/conversations", headers=forged).status_code == 401


def test_a_singular_role_claim_does_not_override_the_configured_roles_claim(client, rsa_key, oidc, make_tenant):
    t = make_tenant("ident")
    r = client.get("/v1/me", headers=_oidc(rsa_key, t, roles=["viewer"], role="admin"))
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    r = client.get("/v1/me", headers=_oidc(rsa_key, t, roles=None, role="admin"))
    assert r.status_code == 401  # no roles claim at all: no platform role


def test_empty_subjects_are_refused(client, rsa_key, oidc, make_tenant):
    t = make_tenant("ident")
    for headers in (_platform(t, subject=""), _platform(t, subject="   "), _oidc(rsa_key, t, sub=""),
                    _oidc(rsa_key, t, sub=" ")):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token", r.text
    with pytest.raises(InvalidInput):
        mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.viewer, subject="")


def test_tokens_have_a_maximum_lifetime(client, rsa_key, oidc, make_tenant):
    t = make_tenant("ident")
    now = dt.datetime.now(dt.UTC)
    year = now + dt.timedelta(days=365)
    for headers in (_platform(t, exp=year), _oidc(rsa_key, t, exp=year)):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "token_lifetime_exceeded", r.text
    for headers in (_platform(t, exp=None), _oidc(rsa_key, t, exp=None), _platform(t, iat=None)):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token", r.text
    assert client.get("/v1/me", headers=_platform(t, exp=now + dt.timedelta(hours=23))).status_code == 200
    with pytest.raises(InvalidInput):
        mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.viewer, subject="v",
                   ttl_seconds=get_settings().jwt_max_lifetime_seconds + 1)


def test_unknown_tenant_by_name_in_an_oidc_token_is_401(client, rsa_key, oidc):
    from identity.tenancy import TenantRef

    r = client.get("/v1/me", headers=_oidc(rsa_key, TenantRef(uuid.uuid4(), "no-such-tenant")))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unknown_tenant"
