import base64
import datetime as dt
import json
import uuid

import jwt
import pytest

from core.errors import Unauthorized
from core.models import Role
from core.security import mint_token, verify_token
from core.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, jwt_secret="k" * 48)


def _mint(settings, **kw):
    return mint_token(settings, tenant_id=uuid.uuid4(), tenant="acme", role=Role.operator, subject="u1",
                      groups=["qa"], **kw)


def test_round_trip(settings):
    p = verify_token(settings, _mint(settings))
    assert (p.subject, p.tenant, p.role, p.groups) == ("u1", "acme", Role.operator, ("qa",))


def _claims(settings, **override):
    now = dt.datetime.now(dt.UTC)
    c = {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": "u", "iat": now, "nbf": now,
         "exp": now + dt.timedelta(hours=1), "tid": str(uuid.uuid4()), "role": "admin"}
    c.update(override)
    return c


@pytest.mark.parametrize(
    "override,code",
    [
        ({"aud": "someone-else"}, "invalid_token"),
        ({"iss": "evil"}, "invalid_token"),
        ({"exp": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "token_expired"),
        ({"nbf": dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)}, "invalid_token"),
        ({"role": "superuser"}, "invalid_token"),
        ({"tid": "not-a-uuid"}, "invalid_token"),
    ],
)
def test_bad_claims_are_rejected(settings, override, code):
    tok = jwt.encode(_claims(settings, **override), settings.jwt_signing_secret(), algorithm="HS256")
    with pytest.raises(Unauthorized) as exc:
        verify_token(settings, tok)
    assert exc.value.code == code


def test_missing_tenant_claim_is_rejected(settings):
    c = _claims(settings)
    del c["tid"]
    with pytest.raises(Unauthorized):
        verify_token(settings, jwt.encode(c, settings.jwt_signing_secret(), algorithm="HS256"))


def test_alg_none_is_rejected(settings):
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d, default=str).encode()).rstrip(b"=").decode()

    c = _claims(settings)
    c = {k: (int(v.timestamp()) if isinstance(v, dt.datetime) else v) for k, v in c.items()}
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(c)}."
    with pytest.raises(Unauthorized):
        verify_token(settings, forged)


def test_wrong_secret_is_rejected(settings):
    tok = jwt.encode(_claims(settings), "another-secret-of-sufficient-length-xx", algorithm="HS256")
    with pytest.raises(Unauthorized):
        verify_token(settings, tok)


def test_hs512_is_not_on_the_allow_list(settings):
    tok = jwt.encode(_claims(settings), settings.jwt_signing_secret(), algorithm="HS512")
    with pytest.raises(Unauthorized):
        verify_token(settings, tok)
