"""Token minting and verification (HS256 for development; OIDC/JWKS arrives with the auth issue).

Algorithms are allow-listed, and issuer, audience, expiry and not-before are always validated.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import jwt

from core.errors import Unauthorized
from core.models import Role
from core.settings import Settings

ALLOWED_ALGORITHMS = ["HS256"]


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: uuid.UUID
    tenant: str
    role: Role
    groups: tuple[str, ...] = field(default_factory=tuple)


def mint_token(
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    tenant: str,
    role: Role,
    subject: str,
    groups: list[str] | None = None,
    ttl_seconds: int | None = None,
) -> str:
    now = dt.datetime.now(dt.UTC)
    ttl = ttl_seconds if ttl_seconds is not None else settings.jwt_ttl_seconds
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(seconds=ttl),
        "jti": str(uuid.uuid4()),
        "tid": str(tenant_id),
        "tenant": tenant,
        "role": role.value,
        "groups": list(groups or []),
    }
    return jwt.encode(claims, settings.jwt_signing_secret(), algorithm="HS256")


def verify_token(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_signing_secret(),
            algorithms=ALLOWED_ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "tid", "role"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired", code="token_expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from None
    try:
        role = Role(claims["role"])
        tid = uuid.UUID(str(claims["tid"]))
    except (ValueError, KeyError):
        raise Unauthorized("invalid token: bad role or tenant claim", code="invalid_token") from None
    groups = claims.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Unauthorized("invalid token: groups must be a list of strings", code="invalid_token")
    return Principal(str(claims["sub"]), tid, str(claims.get("tenant", "")), role, tuple(groups))
