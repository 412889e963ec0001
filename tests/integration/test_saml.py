"""Issue 20: SAML 2.0 sign-in against a local identity provider built in the test with pysaml2 (keys and
self-signed certificates made here with `cryptography`; no network). A signed assertion signs its user in
with the tenant's IdP mapping; a bad signature, a tampered assertion, an unsigned one, another audience,
another recipient, expired conditions and a replayed assertion are each refused with their own code and
audited."""

from __future__ import annotations

import base64
import datetime as dt
import warnings

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.settings import get_settings
from identity.tenancy import ensure_user
from tests.builders import bearer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig, SPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server
    from saml2.sigver import get_xmlsec_binary

IDP_ID = "https://adfs.plant.local/adfs/services/trust"
OTHER_SP = "https://another-service.plant.local/saml/metadata"


def _keypair(tmp, cn):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    kp, cp = tmp / f"{cn}.key", tmp / f"{cn}.crt"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(kp), str(cp)


def _text(md) -> str:
    return md.decode() if isinstance(md, bytes) else str(md)


class LocalIdP:
    """An identity provider made with pysaml2's own Server: it knows our SP (from our metadata endpoint) and
    another SP, and issues signed responses; `lifetime_minutes` < 0 makes one whose conditions have expired."""

    def __init__(self, tmp, sp_metadata: str, cn="adfs", lifetime_minutes=5) -> None:
        other = SPConfig()
        other.load({"entityid": OTHER_SP, "xmlsec_binary": get_xmlsec_binary(), "service": {"sp": {"endpoints": {
            "assertion_consumer_service": [("https://another-service.plant.local/acs",
                                            "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")]}}}})
        key, cert = _keypair(tmp, cn)
        cfg = IdPConfig()
        cfg.load({"entityid": IDP_ID, "xmlsec_binary": get_xmlsec_binary(), "key_file": key, "cert_file": cert,
                  "service": {"idp": {
                      "endpoints": {"single_sign_on_service": [(f"{IDP_ID}/sso", BINDING_HTTP_REDIRECT)]},
                      "policy": {"default": {"lifetime": {"minutes": lifetime_minutes}}},
                      "name_id_format": [NAMEID_FORMAT_PERSISTENT]}},
                  "metadata": {"inline": [sp_metadata, _text(create_metadata_string(None, config=other, sign=False))]}})
        self.server = Server(config=cfg)
        self.metadata = _text(create_metadata_string(None, config=cfg, valid=None, sign=False))

    def response(self, user="alice", groups=("eap-operators",), audience=None, destination=None,
                 sign_assertion=True, in_response_to=None) -> str:
        settings = get_settings()
        base = settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}"
        acs = destination or f"{base}/v1/auth/saml/{self.tenant}/acs"
        resp = self.server.create_authn_response(
            identity={"groups": list(groups), "mail": [f"{user}@plant.local"]}, in_response_to=in_response_to,
            destination=acs, sp_entity_id=audience or f"{base}/v1/auth/saml/{self.tenant}/metadata",
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=user), sign_assertion=sign_assertion,
            sign_response=False, authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"})
        return base64.b64encode(str(resp).encode()).decode()


@pytest.fixture
def saml_tenant(client, make_tenant, tmp_path):
    t = make_tenant("saml")
    ensure_user(t, "ada", Role.admin)
    md = client.get(f"/v1/auth/saml/{t.name}/metadata")  # no token: the IdP's admin fetches it
    assert md.status_code == 200 and md.headers["content-type"].startswith("application/samlmetadata+xml")
    assert f"/v1/auth/saml/{t.name}/acs" in md.text and 'entityID="http://' in md.text
    idp = LocalIdP(tmp_path, md.text)
    idp.tenant = t.name
    admin = bearer(t, "ada", Role.admin)
    r = client.put("/v1/admin/saml", json={"idp_metadata_xml": idp.metadata}, headers=admin)
    assert r.status_code == 200 and r.json()["idp_entity_id"] == IDP_ID, r.text
    mapping = {"rules": [{"claim": "groups", "value": "eap-operators", "role": "operator", "groups": ["qa"]},
                         {"claim": "groups", "value": "eap-stewards", "permissions": ["steward"]}]}
    assert client.put("/v1/admin/idp-mapping", json=mapping, headers=admin).status_code == 200
    return t, idp


def _acs(client, t, encoded):
    return client.post(f"/v1/auth/saml/{t.name}/acs", data={"SAMLResponse": encoded})


def _refusals(t):
    with tenant_session(t.id) as s:
        return [r.details["code"] for r in s.execute(text(
            "SELECT details FROM audit_events WHERE tenant_id = :t AND action = 'auth.saml' AND outcome = 'denied' "
            "ORDER BY seq"), {"t": str(t.id)})]


def test_saml_sign_in_through_a_local_idp(client, saml_tenant):
    t, idp = saml_tenant
    encoded = idp.response("alice", groups=("eap-operators", "eap-stewards"))
    r = _acs(client, t, encoded)
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    me = client.get("/v1/me", headers=headers).json()
    assert me["subject"] == f"saml:{IDP_ID}#alice"
    assert (me["role"], me["groups"], me["permissions"]) == ("operator", ["qa"], ["steward"])
    users = client.get("/v1/admin/users", headers=bearer(t, "ada", Role.admin)).json()
    alice = next(u for u in users if u["username"] == f"saml:{IDP_ID}#alice")
    assert alice["source"] == "saml" and alice["last_login_at"] is not None
    # The same assertion again is a replay.
    r = _acs(client, t, encoded)
    assert r.status_code == 401 and r.json()["error"]["code"] == "saml_replayed"
    # A new assertion after the IdP dropped her from the operators: the mapping gives no role any more.
    r = _acs(client, t, idp.response("alice", groups=("eap-stewards",)))
    assert r.status_code == 401 and r.json()["error"]["code"] == "no_mapped_role"
    # Deactivated by an admin: her platform token stops working and the IdP cannot sign her in again.
    assert client.delete(f"/v1/admin/users/{alice['id']}", headers=bearer(t, "ada", Role.admin)).status_code == 200
    assert client.get("/v1/me", headers=headers).json()["error"]["code"] == "user_deactivated"
    r = _acs(client, t, idp.response("alice"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "user_deactivated"
    assert _refusals(t) == ["saml_replayed", "no_mapped_role"]


def test_bad_assertions_are_refused_and_audited(client, saml_tenant, tmp_path):
    t, idp = saml_tenant
    forger = LocalIdP(tmp_path, client.get(f"/v1/auth/saml/{t.name}/metadata").text, cn="forger")
    forger.tenant = t.name
    expired = LocalIdP(tmp_path, client.get(f"/v1/auth/saml/{t.name}/metadata").text, cn="skewed",
                       lifetime_minutes=-10)
    expired.tenant = t.name
    expired.server.sec = idp.server.sec  # the real IdP's key, with a clock that makes the assertion expired
    tampered = base64.b64encode(base64.b64decode(idp.response("bob")).replace(b"bob", b"eve")).decode()
    cases = [
        ("saml_bad_signature", forger.response("mallory")),  # signed, but not with the IdP's key
        ("saml_bad_signature", tampered),  # signed by the IdP, then altered
        ("saml_bad_signature", idp.response("carol", sign_assertion=False)),
        ("saml_wrong_audience", idp.response("dave", audience=OTHER_SP)),
        ("saml_wrong_recipient", idp.response("erin", destination="https://evil.example/acs")),
        ("saml_expired", expired.response("frank")),
    ]
    for code, encoded in cases:
        r = _acs(client, t, encoded)
        assert r.status_code == 401 and r.json()["error"]["code"] == code, (code, r.text)
    assert _refusals(t) == [code for code, _ in cases]
    r = _acs(client, t, "not base64 at all!")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_saml_response"
    users = [u["username"] for u in client.get("/v1/admin/users", headers=bearer(t, "ada", Role.admin)).json()]
    assert users == ["ada"]  # nobody was provisioned by any of them


def test_saml_configuration_is_validated_and_per_tenant(client, make_tenant, saml_tenant):
    t, idp = saml_tenant
    other = make_tenant("saml")
    ensure_user(other, "eve", Role.admin)
    # The other tenant has no SAML: a valid response for it is refused, and it cannot use t's configuration.
    r = _acs(client, other, idp.response("alice"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "saml_not_configured"
    assert client.get("/v1/admin/saml", headers=bearer(other, "eve", Role.admin)).json()["configured"] is False
    assert client.get("/v1/admin/saml", headers=bearer(t, "ada", Role.admin)).json()["configured"] is True
    for bad in ("<not-xml", '<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>'):
        r = client.put("/v1/admin/saml", json={"idp_metadata_xml": bad}, headers=bearer(other, "eve", Role.admin))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_saml_metadata", r.text
    assert client.get("/v1/auth/saml/no-such-tenant/metadata").status_code == 404
    assert client.get("/v1/auth/saml/Bad%20Name/metadata").status_code == 404


def test_sp_initiated_sign_in_redirects_to_the_idp_with_an_authn_request(client, saml_tenant):
    from urllib.parse import parse_qs, urlsplit

    t, idp = saml_tenant
    r = client.get(f"/v1/auth/saml/{t.name}/login", params={"RelayState": "/chat"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{IDP_ID}/sso"
    query = parse_qs(location.query)
    assert query["RelayState"] == ["/chat"]
    request = idp.server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT).message
    settings = get_settings()
    base = settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}"
    assert request.issuer.text == f"{base}/v1/auth/saml/{t.name}/metadata"
    assert request.assertion_consumer_service_url == f"{base}/v1/auth/saml/{t.name}/acs"
    r = _acs(client, t, idp.response("gina", in_response_to=request.id))
    assert r.status_code == 200, r.text
    other = client.get("/v1/auth/saml/no-such-tenant/login", follow_redirects=False)
    assert other.status_code == 404
