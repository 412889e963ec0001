"""Who a bearer credential is, with the tenant's records applied (called by serving.deps for every request):

- an API key (`eapk_…`): identity.api_keys;
- a platform token (`eap token`, local login, SAML sign-in) of a user the tenant knows: the account must be
  active and the token must carry the account's current token version (deactivation or "revoke tokens"
  bumps it), the role is the lower of the token's and the account's (a demotion applies at once), and
  permissions and groups are the account's as its admins set them. A platform token for a subject with no
  account (development tokens) keeps its claims;
- an OIDC token: the tenant's IdP mapping (identity.oidc_mapping) gives role, permissions and groups from
  the token's claims, or, where the tenant has no mapping, the configured roles claim does; the user is
  provisioned just in time on first sign-in and kept in line with the mapping (a new token with other
  groups changes the role on that sign-in); a deactivated account is refused.

One indexed read of the user per request; writes only on first sign-in or when something changed.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from compliance import audit
from core.db.database import tenant_session
from core.enums import Permission, Role
from core.errors import PlatformError, Unauthorized
from core.repos import tenants
from core.repos import users as repo
from core.security import OIDC_PREFIX, Principal, TenantLookup, principal_from_claims, verify_with_kind
from core.settings import Settings
from identity import api_keys, oidc_mapping
from identity.users import sync_idp_user

TOKEN_VERSION_CLAIM = "tv"  # noqa: S105 - a claim name, not a secret


def resolve(settings: Settings, token: str, tenant_lookup: TenantLookup | None = None) -> Principal:
    if api_keys.is_api_key(token):
        return api_keys.authenticate(token)
    kind, claims = verify_with_kind(settings, token)
    if kind == "oidc":
        return _oidc(settings, claims, tenant_lookup)
    return _platform(principal_from_claims(settings, claims, tenant_lookup, kind), claims)


def _token_version(claims: dict[str, Any]) -> int:
    tv = claims.get(TOKEN_VERSION_CLAIM, 0)
    return tv if isinstance(tv, int) and not isinstance(tv, bool) else -1


def _platform(p: Principal, claims: dict[str, Any]) -> Principal:
    refusal: PlatformError | None = None
    with tenant_session(p.tenant_id) as s:
        user = repo.by_username(s, p.subject)
        if user is None:
            return p
        if not user.is_active:
            refusal = Unauthorized("this account is deactivated", code="user_deactivated")
        elif _token_version(claims) != user.token_version:
            refusal = Unauthorized("this token was revoked: sign in again", code="token_revoked")
        if refusal is not None:
            audit.record(s, tenant_id=p.tenant_id, actor=p.subject, actor_role=p.role.value, action="auth.token",
                         outcome="denied", resource_type="user", resource_id=str(user.id),
                         details={"code": refusal.code})
        else:
            role = min(p.role, Role(user.role), key=lambda r: r.rank)
            perms = Permission.from_claim(role.value, list(user.permissions or []))
            return dataclasses.replace(p, role=role, groups=tuple(user.groups or ()), permissions=perms)
    raise refusal


def _tenant_of(claims: dict[str, Any], tenant_lookup: TenantLookup | None) -> uuid.UUID:
    try:
        return uuid.UUID(str(claims.get("tid")))
    except ValueError:
        name = str(claims.get("tenant", "") or "")
        if not name or tenant_lookup is None:
            raise Unauthorized("invalid token: no tenant claim", code="invalid_token") from None
        return tenant_lookup(name)


def _oidc(settings: Settings, claims: dict[str, Any], tenant_lookup: TenantLookup | None) -> Principal:
    tenant_id = _tenant_of(claims, tenant_lookup)
    sub = str(claims.get("sub") or "")
    username = f"{OIDC_PREFIX}{claims['iss']}#{sub}"
    refusal: PlatformError | None = None
    with tenant_session(tenant_id) as s:
        name = tenants.name(s, tenant_id)
        if name is None:
            raise Unauthorized("token names a tenant that does not exist", code="unknown_tenant")
        mapping = oidc_mapping.stored(tenants.settings(s, tenant_id))
        if mapping is None:  # no mapping: the roles claim, as configured (EAP_OIDC_ROLE_CLAIM)
            base = principal_from_claims(settings, claims, tenant_lookup, "oidc")
            role, permissions, groups = base.role, base.permissions, base.groups
        else:
            mapped = oidc_mapping.evaluate(mapping, claims)
            if mapped is None:
                refusal = Unauthorized("the IdP mapping gives this user no role", code="no_mapped_role")
                audit.record(s, tenant_id=tenant_id, actor=username, action="auth.signin", outcome="denied",
                             details={"code": refusal.code, "source": "oidc"})
            else:
                role, permissions, groups = mapped.role, mapped.permissions, mapped.groups
        if refusal is None:
            user = sync_idp_user(s, tenant_id, username, "oidc", role, permissions, groups)
            if isinstance(user, PlatformError):
                refusal = user
            else:
                r = Role(user.role)
                return Principal(username, tenant_id, name, r, tuple(user.groups or ()), token_subject=sub,
                                 permissions=Permission.from_claim(r.value, list(user.permissions or [])))
    assert refusal is not None  # every path without a refusal returned above
    raise refusal
