"""The JWT suite (platform HS256 and OIDC RS/ES via JWKS file or URL) and break-glass logins."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
import uuid

import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.models import Role
from core.settings import get_settings
from identity.accounts import set_local_password

ISS, AUD = "https://login.plant.local/realms/eap", "eap-api-prod"


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": []}
    for kid, k, alg in (("rsa-1", rsa_key, "RS256"), ("ec-1", ec_key, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(k.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        jwks["keys"].append(jwk)
    return {"rsa": rsa_key, "ec": ec_key, "other": other, "jwks": jwks}


@pytest.fixture
def oidc(keys, tmp_path, monkeypatch):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys["jwks"]))
    monkeypatch.setenv("JWKS_LOCAL_PATH", str(path))
    monkeypatch.setenv("EAP_OIDC_ISSUER", ISS)
    monkeypatch.setenv("EAP_OIDC_AUDIENCE", AUD)
    get_settings.cache_clear()
    yield path
    monkeypatch.delenv("JWKS_LOCAL_PATH")
    get_settings.cache_clear()


def _claims(tenant_ref, **over):
    now = dt.datetime.now(dt.UTC)
    c = {"iss": ISS, "aud": AUD, "sub": "entra|olga", "iat": now, "nbf": now, "exp": now + dt.timedelta(minutes=5),
         "tenant": tenant_ref.name, "roles": ["operator"], "groups": ["qa"]}
    c.update(over)
    return c


def _me(client, token):
    return client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


def test_oidc_rs256_and_es256_from_local_jwks(client, keys, oidc, make_tenant):
    t = make_tenant("oidc")
    for kid, key, alg in (("rsa-1", keys["rsa"], "RS256"), ("ec-1", keys["ec"], "ES256")):
        tok = jwt.encode(_claims(t), key, algorithm=alg, headers={"kid": kid})
        r = _me(client, tok)
        assert r.status_code == 200, r.text
        assert r.json() == {"subject": "entra|olga", "tenant_id": str(t.id), "tenant": t.name, "role": "operator",
                            "groups": ["qa"], "permissions": []}


def _b64(d) -> str:
    return base64.urlsafe_b64encode(json.dumps(d, default=str).encode()).rstrip(b"=").decode()


def _hs_with_public_key(claims: dict, pub_pem: bytes) -> str:
    """The classic confusion attack: HS256 'signed' with the RSA public key as the HMAC secret."""
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_b64(claims)}"
    sig = hmac.new(pub_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_jwt_attacks_are_all_401(client, keys, oidc, make_tenant):
    t = make_tenant("oidc")
    good = _claims(t)
    pub_pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    epoch = {k: (int(v.timestamp()) if isinstance(v, dt.datetime) else v) for k, v in good.items()}
    signed = jwt.encode(good, keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"})
    head, body, sig = signed.split(".")
    tampered_body = _b64({**epoch, "roles": ["admin"]})
    attacks = {
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_b64(epoch)}.",
        "hs_rs_confusion": _hs_with_public_key(epoch, pub_pem),
        "wrong_audience": jwt.encode(_claims(t, aud="someone-else"), keys["rsa"], algorithm="RS256",
                                     headers={"kid": "rsa-1"}),
        "wrong_issuer": jwt.encode(_claims(t, iss="https://evil"), keys["rsa"], algorithm="RS256",
                                   headers={"kid": "rsa-1"}),
        "expired": jwt.encode(_claims(t, exp=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)), keys["rsa"],
                              algorithm="RS256", headers={"kid": "rsa-1"}),
        "not_yet_valid": jwt.encode(_claims(t, nbf=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)), keys["rsa"],
                                    algorithm="RS256", headers={"kid": "rsa-1"}),
        "unknown_kid": jwt.encode(good, keys["rsa"], algorithm="RS256", headers={"kid": "rsa-9"}),
        "missing_kid": jwt.encode(good, keys["rsa"], algorithm="RS256"),
        "foreign_key": jwt.encode(good, keys["other"], algorithm="RS256", headers={"kid": "rsa-1"}),
        "tampered_signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "tampered_claims": f"{head}.{tampered_body}.{sig}",
        "key_alg_mismatch": jwt.encode(good, keys["rsa"], algorithm="RS512", headers={"kid": "rsa-1"}),
        "no_role": jwt.encode(_claims(t, roles=["guest"]), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"}),
        "garbage": "not-a-token",
    }
    for name, tok in attacks.items():
        r = _me(client, tok)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] in ("invalid_token", "token_expired", "unknown_kid"), (name, r.json())


def test_oidc_from_jwks_url(client, keys, monkeypatch, make_tenant):
    t = make_tenant("oidcurl")
    body = json.dumps(keys["jwks"]).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("EAP_JWKS_URL", f"http://127.0.0.1:{srv.server_port}/certs")
    monkeypatch.setenv("EAP_OIDC_ISSUER", ISS)
    monkeypatch.setenv("EAP_OIDC_AUDIENCE", AUD)
    get_settings.cache_clear()
    try:
        tok = jwt.encode(_claims(t, roles=["viewer", "admin"]), keys["ec"], algorithm="ES256",
                         headers={"kid": "ec-1"})
        r = _me(client, tok)
        assert r.status_code == 200 and r.json()["role"] == "admin"
        ghost = jwt.encode(_claims(t, tenant="no-such-tenant"), keys["ec"], algorithm="ES256",
                           headers={"kid": "ec-1"})
        assert _me(client, ghost).json()["error"]["code"] == "unknown_tenant"
    finally:
        srv.shutdown()
        monkeypatch.delenv("EAP_JWKS_URL")
        get_settings.cache_clear()


def _login(client, tenant, user, pw, totp=None):
    body = {"tenant": tenant.name, "username": user, "password": pw}
    if totp:
        body["totp"] = totp
    return client.post("/v1/auth/login", json=body)


def test_admin_login_needs_totp_and_locks_after_six_failures(client, make_tenant):
    t = make_tenant("login")
    enrol = set_local_password(t, "root", Role.admin, "correct horse battery staple")
    secret = pyotp.parse_uri(enrol.totp_uri).secret
    assert _login(client, t, "root", "correct horse battery staple").json()["error"]["code"] == "invalid_credentials"
    assert _login(client, t, "root", "correct horse battery staple", "000000").status_code == 401
    ok = _login(client, t, "root", "correct horse battery staple", pyotp.TOTP(secret).now())
    assert ok.status_code == 200, ok.text
    assert _me(client, ok.json()["access_token"]).json()["role"] == "admin"
    for _ in range(6):
        r = _login(client, t, "root", "wrong password!!", pyotp.TOTP(secret).now())
        assert r.status_code in (401, 423)
    r = _login(client, t, "root", "correct horse battery staple", pyotp.TOTP(secret).now())
    assert r.status_code == 423 and r.json()["error"]["code"] == "account_locked"
    from sqlalchemy import text

    from core.db.database import tenant_session

    with tenant_session(t.id) as s:
        reasons = [d["reason"] for (d,) in s.execute(text(
            "SELECT details FROM audit_events WHERE action = 'auth.login' AND outcome = 'failure' ORDER BY seq"))]
    assert reasons[:2] == ["totp_required", "bad_totp"] and reasons[-1] == "locked"
    assert reasons.count("bad_password") == 6


def test_viewer_login_and_enumeration_resistance(client, make_tenant):
    t = make_tenant("login")
    set_local_password(t, "vera", Role.viewer, "a long viewer password", ["qa"])
    r = _login(client, t, "vera", "a long viewer password")
    assert r.status_code == 200
    assert _me(client, r.json()["access_token"]).json()["groups"] == ["qa"]
    for tenant_name, user in ((t.name, "nobody"), ("no-such-tenant", "vera"), ("Bad Name!", "vera")):
        r = client.post("/v1/auth/login", json={"tenant": tenant_name, "username": user, "password": "x" * 20})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    assert client.post("/v1/auth/login", json={"tenant": t.name}).status_code == 422
    with pytest.raises(Exception, match="at least"):
        set_local_password(t, "weak", Role.viewer, "short")


def test_platform_tokens_can_be_switched_off(client, make_tenant, monkeypatch):
    from core.security import mint_token

    t = make_tenant("nohs")
    tok = mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.admin, subject="x")
    monkeypatch.setenv("EAP_ACCEPT_PLATFORM_TOKENS", "false")
    get_settings.cache_clear()
    try:
        assert _me(client, tok).status_code == 401
    finally:
        monkeypatch.delenv("EAP_ACCEPT_PLATFORM_TOKENS")
        get_settings.cache_clear()
    assert _me(client, tok).status_code == 200
    assert uuid.UUID(_me(client, tok).json()["tenant_id"]) == t.id
