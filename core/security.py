"""Token verification and minting.

- Development: HS256 tokens minted by `eap token` / `POST /v1/auth/login` with EAP_JWT_SECRET.
- Production: OIDC access tokens (RS256/ES256 …) verified against the IdP's JWKS, fetched from
  `EAP_JWKS_URL` or, on air-gapped sites, read from `EAP_JWKS_LOCAL_PATH`.
Algorithms are allow-listed per key type (no alg=none, no HS/RS confusion: an HS256 token is only
ever checked against the platform's own secret, an RS/ES token only against JWKS public keys).
Issuer, audience, expiry and not-before are always validated; `kid` must match a known key.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from core.enums import Permission, Role
from core.errors import ConfigurationError, InvalidInput, Unauthorized
from core.settings import Settings

PLATFORM_ALGORITHMS = ["HS256"]
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
REQUIRED = ["exp", "iat", "iss", "aud", "sub"]


OIDC_PREFIX = "oidc:"


@dataclass(frozen=True)
class Principal:
    """`subject` is the principal's key — everything per user (conversations, memories, goals,
    traces, feedback, rate limits, audit actor) is stored under it. Identity is (issuer, subject):
    platform tokens (issued by this platform: `eap token`, `/v1/auth/login`) keep their `sub`;
    OIDC tokens become `oidc:<issuer>#<sub>`, so an IdP user whose `sub` equals a platform username
    is a different principal. `token_subject` is the `sub` claim as the token carries it."""

    subject: str
    tenant_id: uuid.UUID
    tenant: str
    role: Role
    groups: tuple[str, ...] = field(default_factory=tuple)
    token_subject: str | None = None
    # Permissions next to the role (core.enums.Permission): steward (approve/reject Class III/IV documents;
    # admins hold it implicitly), compliance_officer, approver.
    permissions: frozenset[Permission] = frozenset()
    # An API key's principal (identity.api_keys): the key's id and the endpoint prefixes it may call.
    api_key_id: uuid.UUID | None = None
    allowed_paths: tuple[str, ...] | None = None

    @property
    def steward(self) -> bool:
        return Permission.steward in self.permissions

    def has(self, permission: Permission | str) -> bool:
        return Permission(permission) in self.permissions

    @property
    def display_subject(self) -> str:
        return self.token_subject if self.token_subject is not None else self.subject


def mint_token(settings: Settings, *, tenant_id: uuid.UUID, tenant: str, role: Role, subject: str,
               groups: list[str] | None = None, ttl_seconds: int | None = None,
               extra: dict[str, Any] | None = None) -> str:
    now = dt.datetime.now(dt.UTC)
    ttl = ttl_seconds if ttl_seconds is not None else settings.jwt_ttl_seconds
    if not 0 < ttl <= settings.jwt_max_lifetime_seconds:
        raise InvalidInput(f"token lifetime must be 1-{settings.jwt_max_lifetime_seconds} seconds "
                           "(EAP_JWT_MAX_LIFETIME_SECONDS)", code="invalid_ttl")
    if not subject.strip() or subject.startswith(OIDC_PREFIX):
        raise InvalidInput(f"a token subject must be non-empty and not start with {OIDC_PREFIX!r}",
                           code="invalid_subject")
    claims = {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": subject, "iat": now, "nbf": now,
        "exp": now + dt.timedelta(seconds=ttl), "jti": str(uuid.uuid4()), "tid": str(tenant_id), "tenant": tenant,
        "role": role.value, "groups": list(groups or []), **(extra or {}),
    }
    return jwt.encode(claims, settings.jwt_signing_secret(), algorithm="HS256")


class _JWKS:
    """Keys by kid from a local file (re-read when it changes) or a URL (cached, refreshed on an
    unknown kid at most once a minute)."""

    def __init__(self, path: str | None, url: str | None, ttl_s: int = 600) -> None:
        self.path, self.url, self.ttl_s = path, url, ttl_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at = 0.0
        self._mtime: int | None = None

    def _load(self) -> None:
        if self.path:
            p = Path(self.path)
            try:
                mtime = p.stat().st_mtime_ns
                if mtime == self._mtime:
                    return
                data = json.loads(p.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot read JWKS from {self.path}: {exc}") from None
            self._mtime = mtime
        else:
            import httpx

            try:
                resp = httpx.get(self.url or "", timeout=5)
                resp.raise_for_status()
                data = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise Unauthorized(f"identity provider keys unavailable ({exc.__class__.__name__})",
                                   code="jwks_unavailable") from None
        keys = {}
        for k in jwt.PyJWKSet.from_dict(data).keys:
            if k.key_id:
                keys[k.key_id] = k
        self._keys = keys
        self._loaded_at = time.monotonic()

    def get(self, kid: str | None) -> jwt.PyJWK:
        if kid is None:
            raise Unauthorized("invalid token: missing kid", code="invalid_token")
        stale = time.monotonic() - self._loaded_at > (self.ttl_s if kid in self._keys else 60)
        if self.path or stale or not self._keys:
            self._load()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("invalid token: unknown signing key (kid)", code="unknown_kid")
        return key


# Resolves a tenant named in an OIDC token to its id (raises when there is none).
TenantLookup = Callable[[str], uuid.UUID]


@functools.lru_cache(maxsize=4)
def _jwks(path: str | None, url: str | None) -> _JWKS:
    return _JWKS(path, url)


def _decode(token: str, key: Any, algorithms: list[str], issuer: str, audience: str,
            max_lifetime_s: int) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                            options={"require": REQUIRED}, leeway=30)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token not yet valid", code="invalid_token") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from None
    # A token is a bearer credential: one that lives for years cannot be taken back. exp and iat
    # are required above; refuse lifetimes over the configured maximum (EAP_JWT_MAX_LIFETIME_SECONDS).
    try:
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (TypeError, ValueError):
        raise Unauthorized("invalid token: exp and iat must be numbers", code="invalid_token") from None
    if lifetime > max_lifetime_s:
        raise Unauthorized(f"invalid token: lifetime over the maximum of {max_lifetime_s} s",
                           code="token_lifetime_exceeded")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or "\x00" in sub:
        raise Unauthorized("invalid token: empty subject", code="invalid_token")
    return claims


def _verify(settings: Settings, token: str) -> tuple[str, dict[str, Any]]:
    """(issuer kind, claims): "platform" for this platform's HS256 tokens, "oidc" for the IdP's."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token: malformed", code="invalid_token") from None
    alg = header.get("alg")
    if alg in PLATFORM_ALGORITHMS and settings.accept_platform_tokens:
        return "platform", _decode(token, settings.jwt_signing_secret(), PLATFORM_ALGORITHMS, settings.jwt_issuer,
                                   settings.jwt_audience, settings.jwt_max_lifetime_seconds)
    if alg in OIDC_ALGORITHMS and (settings.jwks_local_path or settings.jwks_url):
        key = _jwks(settings.jwks_local_path, settings.jwks_url).get(header.get("kid"))
        if key.algorithm_name and key.algorithm_name != alg:
            raise Unauthorized("invalid token: algorithm does not match the key", code="invalid_token")
        return "oidc", _decode(token, key.key, [alg], settings.oidc_issuer or "", settings.oidc_audience or "",
                               settings.jwt_max_lifetime_seconds)
    raise Unauthorized(f"invalid token: algorithm {alg!r} not allowed", code="invalid_token")


def verify_claims(settings: Settings, token: str) -> dict[str, Any]:
    return _verify(settings, token)[1]


def verify_with_kind(settings: Settings, token: str) -> tuple[str, dict[str, Any]]:
    """(issuer kind, verified claims): "platform" for this platform's tokens, "oidc" for the IdP's."""
    return _verify(settings, token)


def principal_from_claims(settings: Settings, claims: dict[str, Any], tenant_lookup: TenantLookup | None = None,
                          kind: str = "platform") -> Principal:
    # Platform tokens carry the platform's own `role`; for IdP tokens only the configured roles
    # claim counts (a singular `role` claim an IdP also sends must not override it).
    role_claim = claims.get("role") if kind == "platform" else claims.get(settings.oidc_role_claim)
    if isinstance(role_claim, list):  # IdPs send app roles as a list: take the strongest we know
        known = [r.value for r in sorted(Role, key=lambda r: r.rank, reverse=True) if r.value in role_claim]
        role_claim = known[0] if known else None
    try:
        role = Role(role_claim if isinstance(role_claim, str) else "")  # anything else is not a role: refused below
    except (ValueError, TypeError):
        raise Unauthorized("invalid token: no platform role (admin/operator/viewer)", code="invalid_token") from None
    groups = claims.get(settings.oidc_groups_claim, claims.get("groups")) or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Unauthorized("invalid token: groups must be a list of strings", code="invalid_token")
    tid = claims.get("tid")
    tenant = str(claims.get("tenant", "") or "")
    try:
        tenant_id = uuid.UUID(str(tid))
    except ValueError:
        if not tenant or tenant_lookup is None:
            raise Unauthorized("invalid token: no tenant claim", code="invalid_token") from None
        tenant_id = tenant_lookup(tenant)
    sub = str(claims.get("sub") or "")
    if not sub.strip():
        raise Unauthorized("invalid token: empty subject", code="invalid_token")
    permissions = Permission.from_claim(role.value, claims.get(settings.oidc_role_claim))
    if kind == "platform":
        if sub.startswith(OIDC_PREFIX):  # that namespace belongs to the IdP's users
            raise Unauthorized("invalid token: reserved subject", code="invalid_token")
        return Principal(sub, tenant_id, tenant, role, tuple(groups), permissions=permissions)
    return Principal(f"{OIDC_PREFIX}{claims['iss']}#{sub}", tenant_id, tenant, role, tuple(groups), token_subject=sub,
                     permissions=permissions)


def verify_token(settings: Settings, token: str, tenant_lookup: TenantLookup | None = None) -> Principal:
    kind, claims = _verify(settings, token)
    return principal_from_claims(settings, claims, tenant_lookup, kind)
