from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from core.errors import InvalidInput, NotFound
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from identity import saml
from identity.accounts import login, login_unknown_tenant
from identity.principals import TOKEN_VERSION_CLAIM
from identity.tenancy import TenantRef, get_tenant
from serving.ratelimit import limit_login

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class LoginIn(BaseModel):
    tenant: Annotated[str, Field(min_length=1, max_length=63)]
    username: Annotated[str, Field(min_length=1, max_length=200)]
    password: Annotated[str, Field(min_length=1, max_length=1000)]
    totp: Annotated[str | None, Field(pattern=r"^\d{6}$")] = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


def _login(body: LoginIn) -> TokenOut:
    try:
        tenant = get_tenant(body.tenant)
    except (NotFound, InvalidInput):  # unknown and malformed tenants look like bad credentials, at the same cost
        login_unknown_tenant(body.tenant, body.username, body.password)
        raise  # not reached: login_unknown_tenant always raises
    user = login(tenant, body.username, body.password, body.totp)
    s = get_settings()
    token = mint_token(s, tenant_id=tenant.id, tenant=tenant.name, role=Role(user.role), subject=user.username,
                       groups=list(user.groups), extra={"amr": ["pwd", "otp"] if user.role == "admin" else ["pwd"],
                                                        TOKEN_VERSION_CLAIM: user.token_version})
    return TokenOut(access_token=token, expires_in=s.jwt_ttl_seconds)


@router.post("/login", response_model=TokenOut)
async def post_login(body: LoginIn, request: Request) -> TokenOut:
    """Local break-glass login (argon2 password; TOTP required for admins — send it with the password;
    lock-out after 6 failures; rate-limited per client IP and per username). Every failure answers
    the same 401, whichever part was wrong."""
    limit_login(request.client.host if request.client else "unknown", body.tenant, body.username)
    return await run_in_threadpool(_login, body)


# --------------------------------------------------------------------------- SAML 2.0


def _saml_tenant(tenant: str) -> TenantRef:
    try:
        return get_tenant(tenant)
    except InvalidInput:
        raise NotFound("tenant not found", code="tenant_not_found") from None


@router.get("/saml/{tenant}/metadata", response_class=Response,
            responses={200: {"content": {"application/samlmetadata+xml": {}}}})
def saml_metadata(tenant: str) -> Response:
    """This service provider's SAML metadata for the tenant (entity id, assertion consumer service), to
    register with the identity provider."""
    xml = saml.sp_metadata(get_settings(), _saml_tenant(tenant))
    return Response(xml, media_type="application/samlmetadata+xml")


@router.get("/saml/{tenant}/login", status_code=303, response_class=RedirectResponse)
def saml_login(tenant: str, relay_state: Annotated[str, Query(alias="RelayState", max_length=80)] = "") -> Response:
    """SP-initiated sign-in: a redirect to the tenant's IdP with an AuthnRequest; the IdP posts its answer to
    the assertion consumer service."""
    return RedirectResponse(saml.login_url(get_settings(), _saml_tenant(tenant), relay_state), status_code=303)


def _acs(tenant: str, saml_response: str) -> TokenOut:
    s = get_settings()
    signed_in = saml.consume(s, _saml_tenant(tenant), saml_response)
    user = signed_in.user
    token = mint_token(s, tenant_id=signed_in.tenant.id, tenant=signed_in.tenant.name, role=Role(user.role),
                       subject=user.username, groups=list(user.groups),
                       extra={"amr": ["saml"], TOKEN_VERSION_CLAIM: user.token_version})
    return TokenOut(access_token=token, expires_in=s.jwt_ttl_seconds)


@router.post("/saml/{tenant}/acs", response_model=TokenOut)
async def saml_acs(tenant: str,
                   saml_response: Annotated[str, Form(alias="SAMLResponse", max_length=2_000_000)]) -> TokenOut:
    """Assertion consumer service (HTTP-POST binding): a signed assertion from the tenant's IdP signs its user
    in (provisioned on first sign-in, role/permissions/groups from the tenant's IdP mapping) and returns a
    platform token. Bad signatures, another audience or recipient, expired conditions and replayed
    assertions are refused (401 with the reason's code) and audited."""
    return await run_in_threadpool(_acs, tenant, saml_response)
