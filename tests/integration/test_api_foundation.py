import uuid

import jwt
import pytest

from core.models import Role
from core.security import mint_token
from core.settings import get_settings


def _token(tenant, role=Role.viewer, **kw):
    return mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name, role=role, subject="u@x", **kw)


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"
    assert r.json()["revision"]


def test_me_with_valid_token(client, make_tenant):
    t = make_tenant("api")
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {_token(t, groups=['qa'])}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "u@x", "tenant_id": str(t.id), "tenant": t.name, "role": "viewer",
                        "groups": ["qa"], "permissions": []}


@pytest.mark.parametrize(
    "header,code",
    [
        (None, "missing_token"),
        ("Basic abc", "invalid_token"),
        ("Bearer not.a.jwt", "invalid_token"),
    ],
)
def test_bad_auth_is_401_with_machine_readable_error(client, header, code):
    headers = {"Authorization": header} if header else {}
    r = client.get("/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"] == "Bearer"


def test_forged_and_foreign_tokens(client, make_tenant):
    t = make_tenant("api")
    s = get_settings()
    claims = jwt.decode(_token(t), options={"verify_signature": False})
    forged = jwt.encode(claims, "attacker-secret-attacker-secret-xx", algorithm="HS256")
    wrong_aud = jwt.encode({**claims, "aud": "other"}, s.jwt_signing_secret(), algorithm="HS256")
    for tok in (forged, wrong_aud):
        r = client.get("/v1/me", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    ghost = mint_token(s, tenant_id=uuid.uuid4(), tenant="ghost", role=Role.admin, subject="x")
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {ghost}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unknown_tenant"


def test_unknown_route_uses_error_shape(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
