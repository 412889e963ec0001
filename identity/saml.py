"""SAML 2.0 sign-in for identity providers without OIDC (e.g. AD FS), with pysaml2 and xmlsec1.

Per tenant: the SP's metadata at `/v1/auth/saml/<tenant>/metadata` (its entity id is that URL) and the
assertion consumer service at `/v1/auth/saml/<tenant>/acs` (HTTP-POST binding). The IdP's metadata (its
entity id and signing certificate) is tenant setting `saml`, set by a tenant admin.

A response is accepted only when its assertion is signed by the IdP's key, its audience is this SP, its
destination and subject-confirmation recipient are this ACS URL, its conditions hold now (60 s clock
leeway), and its assertion id was never consumed before (replay cache in `saml_assertions`, kept until the
assertion expires). The tenant's IdP mapping (identity.oidc_mapping, with SAML attribute names as claims)
gives role, permissions and groups; the user is provisioned just in time. Every refusal is audited.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

from compliance import audit
from core.db.database import tenant_session
from core.errors import ConfigurationError, InvalidInput, NotFound, PlatformError, Unauthorized
from core.models import User
from core.repos import tenants
from core.repos import users as repo
from core.settings import Settings
from identity import oidc_mapping
from identity.tenancy import TenantRef
from identity.users import sync_idp_user

SETTING = "saml"
CLOCK_LEEWAY_S = 60
_DEFAULT_LIFETIME = dt.timedelta(minutes=10)
log = logging.getLogger(__name__)


def _saml2() -> Any:
    with warnings.catch_warnings():
        # pysaml2 imports cryptography's CFB mode, which warns about its future move.
        warnings.simplefilter("ignore")
        import saml2
        import saml2.client
        import saml2.config
        import saml2.metadata
        import saml2.sigver
    return saml2


def base_url(settings: Settings) -> str:
    return (settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")


def sp_entity_id(settings: Settings, tenant: str) -> str:
    return f"{base_url(settings)}/v1/auth/saml/{tenant}/metadata"


def acs_url(settings: Settings, tenant: str) -> str:
    return f"{base_url(settings)}/v1/auth/saml/{tenant}/acs"


def _xmlsec() -> str:
    found = shutil.which("xmlsec1")
    if found is None:
        raise ConfigurationError("SAML needs the xmlsec1 program (Debian package xmlsec1)")
    return found


def _sp_config(settings: Settings, tenant: str, idp_metadata: str | None) -> Any:
    saml2 = _saml2()
    conf: dict[str, Any] = {
        "entityid": sp_entity_id(settings, tenant),
        "xmlsec_binary": _xmlsec(),
        "allow_unknown_attributes": True,
        "accepted_time_diff": CLOCK_LEEWAY_S,
        "service": {"sp": {
            "endpoints": {"assertion_consumer_service": [(acs_url(settings, tenant), saml2.BINDING_HTTP_POST)]},
            # IdP-initiated sign-in (AD FS's usual flow): no outstanding request to match; the replay cache
            # and the short validity of assertions stand in for it.
            "allow_unsolicited": True,
            "want_assertions_signed": True,
            "want_response_signed": False,
            "authn_requests_signed": False,
        }},
        "metadata": {"inline": [idp_metadata]} if idp_metadata else {},
    }
    cfg = saml2.config.SPConfig()
    cfg.load(conf)
    return cfg


def sp_metadata(settings: Settings, tenant: TenantRef) -> str:
    saml2 = _saml2()
    out = saml2.metadata.create_metadata_string(None, config=_sp_config(settings, tenant.name, None), valid=None,
                                                sign=False)
    return out.decode() if isinstance(out, bytes) else str(out)


def validate_idp_metadata(settings: Settings, tenant: TenantRef, xml: str) -> dict[str, Any]:
    """The IdP metadata an admin sets: it must parse and name an IdP with a signing certificate."""
    try:
        cfg = _sp_config(settings, tenant.name, xml)
        idps = [eid for eid in cfg.metadata.identity_providers()]
        certs = [c for eid in idps for c in cfg.metadata.certs(eid, "idpsso", "signing")]
    except ConfigurationError:
        raise
    except Exception as exc:  # noqa: BLE001 - pysaml2 raises many types for bad XML; all mean "invalid"
        raise InvalidInput(f"IdP metadata could not be read: {str(exc)[:200]}", code="invalid_saml_metadata") from None
    if len(idps) != 1 or not certs:
        raise InvalidInput("IdP metadata must describe exactly one identity provider with a signing certificate",
                           code="invalid_saml_metadata")
    return {"idp_entity_id": idps[0], "idp_metadata_xml": xml}


@dataclass(frozen=True)
class SignIn:
    user: User
    tenant: TenantRef
    issuer: str


def _diagnose(xml: str, settings: Settings, tenant: str) -> str | None:
    """Why pysaml2 refused an (unverified) response, for the error code: expired or early conditions, another
    audience, another recipient. Read with defusedxml (no entities, no external references)."""
    from defusedxml import ElementTree

    ns = {"p": "urn:oasis:names:tc:SAML:2.0:protocol", "a": "urn:oasis:names:tc:SAML:2.0:assertion"}
    try:
        root = ElementTree.fromstring(xml)
    except Exception:  # noqa: BLE001 - unreadable XML is simply not diagnosable
        return None
    now = dt.datetime.now(dt.UTC)
    leeway = dt.timedelta(seconds=CLOCK_LEEWAY_S)
    for cond in root.iterfind(".//a:Conditions", ns):
        for attr in ("NotOnOrAfter", "NotBefore"):
            value = cond.get(attr)
            if value:
                try:
                    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    return "saml_expired"
                if (when + leeway <= now) if attr == "NotOnOrAfter" else (when - leeway > now):
                    return "saml_expired"
        audiences = [a.text for a in cond.iterfind(".//a:Audience", ns)]
        if audiences and sp_entity_id(settings, tenant) not in audiences:
            return "saml_wrong_audience"
    acs = acs_url(settings, tenant)
    if root.get("Destination") not in (None, acs):
        return "saml_wrong_recipient"
    for data in root.iterfind(".//a:SubjectConfirmationData", ns):
        if data.get("Recipient") not in (None, acs):
            return "saml_wrong_recipient"
    return None


_MESSAGES = {
    "saml_bad_signature": "the SAML assertion's signature is missing or not the identity provider's",
    "saml_expired": "the SAML assertion's conditions do not hold now (expired or not yet valid)",
    "saml_wrong_audience": "the SAML assertion is meant for another service provider",
    "saml_wrong_recipient": "the SAML response is addressed to another endpoint",
    "saml_replayed": "this SAML assertion was already used",
    "saml_invalid": "the SAML response is not valid",
    "no_mapped_role": "the IdP mapping gives this user no role",
}


def _refuse(tenant: TenantRef, code: str, details: dict[str, Any]) -> Unauthorized:
    audit.record_detached(tenant.id, actor=str(details.get("subject") or "anonymous"), action="auth.saml",
                          outcome="denied", details={"code": code, **details})
    return Unauthorized(_MESSAGES[code], code=code)


def _parse(settings: Settings, tenant: TenantRef, idp_metadata: str, encoded: str) -> Any:
    saml2 = _saml2()
    try:
        xml = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("SAMLResponse must be base64-encoded XML", code="invalid_saml_response") from None
    client = saml2.client.Saml2Client(config=_sp_config(settings, tenant.name, idp_metadata))
    try:
        resp = client.parse_authn_request_response(encoded, saml2.BINDING_HTTP_POST)
    except (saml2.sigver.SignatureError, saml2.sigver.MissingKey) as exc:
        raise _refuse(tenant, "saml_bad_signature", {"reason": str(exc)[:200]}) from None
    except Exception as exc:  # noqa: BLE001 - pysaml2 refuses with many exception types; all are refusals
        code = _diagnose(xml, settings, tenant.name) or "saml_invalid"
        if "signature" in str(exc).lower():
            code = "saml_bad_signature"
        raise _refuse(tenant, code, {"reason": f"{type(exc).__name__}: {str(exc)[:200]}"}) from None
    if resp is None or resp.assertion is None:
        raise _refuse(tenant, _diagnose(xml, settings, tenant.name) or "saml_invalid", {"reason": "no assertion"})
    # Recipient of every subject confirmation, checked here too (pysaml2 checks the Destination).
    acs = acs_url(settings, tenant.name)
    for conf in resp.assertion.subject.subject_confirmation or []:
        data = conf.subject_confirmation_data
        if data is not None and data.recipient not in (None, acs):
            raise _refuse(tenant, "saml_wrong_recipient", {"recipient": data.recipient})
    return resp


def _expiry(resp: Any) -> dt.datetime:
    cond = resp.assertion.conditions
    value = cond.not_on_or_after if cond is not None else None
    if value:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) + dt.timedelta(seconds=CLOCK_LEEWAY_S)
    return dt.datetime.now(dt.UTC) + _DEFAULT_LIFETIME


def consume(settings: Settings, tenant: TenantRef, encoded: str) -> SignIn:
    """Verify a SAMLResponse (base64, HTTP-POST binding) and sign its user in."""
    with tenant_session(tenant.id) as s:
        tenant_settings = tenants.settings(s, tenant.id)
    config = tenant_settings.get(SETTING) or {}
    if not config.get("idp_metadata_xml"):
        raise NotFound("SAML is not configured for this tenant", code="saml_not_configured")
    resp = _parse(settings, tenant, str(config["idp_metadata_xml"]), encoded)
    issuer = str(resp.issuer() or "")
    if issuer != config.get("idp_entity_id"):
        raise _refuse(tenant, "saml_invalid", {"reason": "issuer is not the configured IdP", "issuer": issuer})
    name_id = resp.name_id.text if resp.name_id is not None else None
    if not name_id or not str(name_id).strip():
        raise _refuse(tenant, "saml_invalid", {"reason": "no NameID"})
    username = f"saml:{issuer}#{str(name_id).strip()}"
    mapping = oidc_mapping.stored(tenant_settings)
    mapped = oidc_mapping.evaluate(mapping, dict(resp.ava or {})) if mapping is not None else None
    refusal: PlatformError | None = None
    now = dt.datetime.now(dt.UTC)
    with tenant_session(tenant.id) as s:
        if not repo.consume_assertion(s, tenant.id, str(resp.assertion.id), issuer, _expiry(resp), now):
            refusal = Unauthorized(_MESSAGES["saml_replayed"], code="saml_replayed")
        elif mapped is None:
            refusal = Unauthorized(_MESSAGES["no_mapped_role"], code="no_mapped_role")
        else:
            user = sync_idp_user(s, tenant.id, username, "saml", mapped.role, mapped.permissions, mapped.groups,
                                 login=True)
            if isinstance(user, PlatformError):
                refusal = user
            else:
                audit.record(s, tenant_id=tenant.id, actor=username, actor_role=user.role, action="auth.saml",
                             resource_type="user", resource_id=str(user.id),
                             details={"issuer": issuer, "assertion_id": str(resp.assertion.id)})
                s.expunge(user)
                return SignIn(user, tenant, issuer)
    raise _refuse(tenant, refusal.code, {"subject": username, "assertion_id": str(resp.assertion.id)}) \
        if refusal.code in _MESSAGES else refusal


def login_url(settings: Settings, tenant: TenantRef, relay_state: str = "") -> str:
    """SP-initiated sign-in: the IdP's single sign-on URL carrying an AuthnRequest (HTTP-Redirect binding)."""
    saml2 = _saml2()
    with tenant_session(tenant.id) as s:
        config = tenants.settings(s, tenant.id).get(SETTING) or {}
    if not config.get("idp_metadata_xml"):
        raise NotFound("SAML is not configured for this tenant", code="saml_not_configured")
    client = saml2.client.Saml2Client(config=_sp_config(settings, tenant.name, str(config["idp_metadata_xml"])))
    try:
        _request_id, info = client.prepare_for_authenticate(entityid=config["idp_entity_id"], relay_state=relay_state,
                                                            binding=saml2.BINDING_HTTP_REDIRECT)
    except Exception as exc:  # noqa: BLE001 - pysaml2 raises many types; all mean the IdP offers no such endpoint
        raise InvalidInput(f"the IdP has no HTTP-Redirect sign-on endpoint ({type(exc).__name__})",
                           code="saml_no_sso_endpoint") from None
    return str(dict(info["headers"])["Location"])
