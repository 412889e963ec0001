"""API keys for integrations: created by a tenant admin and shown once, stored as a SHA-256 of their
secret, scoped (a role ceiling, need-to-know groups and the endpoint prefixes they may call), expiring,
revocable, with the last use recorded. A key is sent like a token: `Authorization: Bearer eapk_…`.

The key names its tenant (`eapk_<tenant id hex>_<secret>`) so it is checked under that tenant's
row-level security; the secret carries 256 random bits, so a plain SHA-256 is a sufficient hash (a slow
password hash protects guessable secrets, which these are not).

Keys never reach /v1/admin: an integration cannot mint keys or change users, whatever its role.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from typing import Any

from sqlalchemy.orm import Session

from compliance import audit
from core.db.database import tenant_session
from core.enums import Role
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from core.models import ApiKey
from core.repos import tenants
from core.repos import users as repo
from core.security import Principal
from identity.users import refuse

PREFIX = "eapk_"
ADMIN_PREFIX = "/v1/admin"
MAX_DAYS = 366
_KEY = re.compile(r"^eapk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
_PATH_PREFIX = re.compile(r"^/v1/[A-Za-z0-9_\-/{}.]*$")


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def view(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "role": key.role, "groups": list(key.groups),
            "allowed_prefixes": list(key.allowed_prefixes), "expires_at": key.expires_at,
            "revoked_at": key.revoked_at, "revoked_by": key.revoked_by, "last_used_at": key.last_used_at,
            "created_by": key.created_by, "created_at": key.created_at}


def _prefixes(raw: list[str]) -> list[str]:
    out = []
    for p in raw:
        p = p.strip().rstrip("/")
        if not _PATH_PREFIX.match(p) or ".." in p or "//" in p:
            raise InvalidInput(f"allowed prefix {p!r} must be an API path like /v1/search", code="invalid_scope")
        if p == ADMIN_PREFIX or p.startswith(ADMIN_PREFIX + "/") or ADMIN_PREFIX.startswith(p):
            raise InvalidInput("API keys cannot be scoped to the admin API", code="invalid_scope")
        out.append(p)
    if not out:
        raise InvalidInput("an API key needs at least one allowed endpoint prefix", code="invalid_scope")
    return sorted(set(out))


def create(session: Session, actor: Principal, *, name: str, role: str, allowed_prefixes: list[str],
           groups: list[str], expires_in_days: int) -> tuple[ApiKey, str]:
    """(the stored key, the key itself: shown once, never stored)."""
    action = "api_key.create"
    try:
        r = Role(role)
    except ValueError:
        raise refuse(actor, InvalidInput(f"unknown role {role!r}: use admin, operator or viewer",
                                         code="unknown_role"), action, details={"role": role}) from None
    if r.rank > actor.role.rank:
        raise refuse(actor, Forbidden("a key's role cannot exceed your own", code="role_above_own"), action)
    if not 1 <= expires_in_days <= MAX_DAYS:
        raise refuse(actor, InvalidInput(f"expires_in_days must be 1-{MAX_DAYS}", code="invalid_expiry"), action)
    try:
        prefixes = _prefixes(allowed_prefixes)
    except InvalidInput as exc:
        raise refuse(actor, exc, action, details={"allowed_prefixes": allowed_prefixes}) from None
    if repo.key_name_taken(session, name):
        raise refuse(actor, Conflict(f"an API key named {name!r} exists", code="api_key_exists"), action)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(id=uuid.uuid4(), tenant_id=actor.tenant_id, name=name, prefix=secret[:8], key_hash=_hash(secret),
                 role=r.value, groups=sorted(set(groups)), allowed_prefixes=prefixes,
                 expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_in_days), created_by=actor.subject)
    session.add(key)
    session.flush()
    audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value, action=action,
                 resource_type="api_key", resource_id=str(key.id),
                 details={"name": name, "role": r.value, "allowed_prefixes": prefixes, "groups": key.groups,
                          "expires_at": key.expires_at.isoformat()})
    return key, f"{PREFIX}{actor.tenant_id.hex}_{secret}"


def revoke(session: Session, actor: Principal, key_id: uuid.UUID) -> ApiKey:
    key = repo.get_key(session, key_id, lock=True)
    if key is None:
        raise NotFound("API key not found", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at, key.revoked_by = dt.datetime.now(dt.UTC), actor.subject
        audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value,
                     action="api_key.revoke", resource_type="api_key", resource_id=str(key.id),
                     details={"name": key.name})
    return key


def authenticate(token: str) -> Principal:
    """The principal of an API key; 401 for a malformed, unknown, revoked or expired key (the last two audited
    in the key's tenant)."""
    m = _KEY.match(token)
    if m is None:
        raise Unauthorized("invalid API key", code="invalid_api_key")
    tenant_id, secret = uuid.UUID(m.group(1)), m.group(2)
    now = dt.datetime.now(dt.UTC)
    refusal: Unauthorized | None = None
    with tenant_session(tenant_id) as s:
        name = tenants.name(s, tenant_id)
        key = repo.key_by_hash(s, _hash(secret)) if name is not None else None
        if name is None or key is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if key.revoked_at is not None:
            refusal = Unauthorized("this API key was revoked", code="api_key_revoked")
        elif key.expires_at <= now:
            refusal = Unauthorized("this API key has expired", code="api_key_expired")
        if refusal is not None:
            audit.record(s, tenant_id=tenant_id, actor=f"apikey:{key.name}", actor_role=key.role,
                         action="auth.api_key", outcome="denied", resource_type="api_key", resource_id=str(key.id),
                         details={"code": refusal.code})
        else:
            repo.touch_key(s, key.id, now)
    if refusal is not None:
        raise refusal
    return Principal(f"apikey:{key.id}", tenant_id, name, Role(key.role), tuple(key.groups),
                     token_subject=f"apikey:{key.name}", api_key_id=key.id,
                     allowed_paths=tuple(key.allowed_prefixes))


def check_path(principal: Principal, path: str) -> None:
    """403 when an API key calls outside its scope (and always for the admin API); audited in its tenant."""
    if principal.api_key_id is None:
        return
    allowed = principal.allowed_paths or ()
    admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
    if not admin and any(path == p or path.startswith(p + "/") for p in allowed):
        return
    code = "api_key_not_allowed" if admin else "api_key_scope"
    audit.record_detached(principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                          action="auth.api_key", outcome="denied", resource_type="api_key",
                          resource_id=str(principal.api_key_id), details={"code": code, "path": path[:300]})
    raise Forbidden("this API key may not call the admin API" if admin else
                    f"this API key may only call {', '.join(allowed)}", code=code)
