"""Users of a tenant as its admins manage them: roles (admin / operator / viewer), permissions (steward,
compliance officer, approver), need-to-know groups, deactivation (never deletion: the audit trail keeps
the actor). Users from an identity provider are provisioned just in time and kept in line with the
tenant's IdP mapping at each sign-in.

Every change is audited in the caller's transaction; every refusal is audited in a transaction of its own
(`audit.record_detached`), so the record survives the request's rollback.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from compliance import audit
from core.enums import Permission, Role
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, PlatformError
from core.models import User
from core.repos import tenants
from core.repos import users as repo
from core.security import OIDC_PREFIX, Principal

RESERVED_PREFIXES = (OIDC_PREFIX, "saml:", "apikey:")
IDP_SOURCES = frozenset({"oidc", "saml"})
POLICY_SETTING = "identity_policy"


def refuse(actor: Principal, exc: PlatformError, action: str, *, resource_id: str | None = None,
           details: dict[str, Any] | None = None) -> PlatformError:
    """Audit a refused admin action in its own transaction (it survives the rollback) and return the error."""
    audit.record_detached(actor.tenant_id, actor=actor.subject, actor_role=actor.role.value, action=action,
                          resource_type="user", resource_id=resource_id, outcome="denied",
                          details={"code": exc.code, "reason": exc.message, **(details or {})})
    return exc


def _permissions(names: list[str], actor: Principal | None = None, action: str = "") -> list[str]:
    unknown = sorted(n for n in names if n not in Permission.__members__)
    if unknown:
        exc = InvalidInput(f"unknown permission {', '.join(map(repr, unknown))}: use "
                           f"{', '.join(p.value for p in Permission)}", code="unknown_permission")
        raise refuse(actor, exc, action, details={"permissions": unknown}) if actor is not None else exc
    return sorted({Permission(n).value for n in names})


def _role(name: str, actor: Principal, action: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        raise refuse(actor, InvalidInput(f"unknown role {name!r}: use admin, operator or viewer",
                                         code="unknown_role"), action, details={"role": name}) from None


def view(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "email": user.email, "display_name": user.display_name,
            "role": user.role, "permissions": list(user.permissions or []), "groups": list(user.groups or []),
            "source": user.source, "active": user.is_active, "deactivated_at": user.deactivated_at,
            "deactivated_by": user.deactivated_by, "last_login_at": user.last_login_at,
            "created_at": user.created_at, "local_login": user.password_hash is not None}


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = repo.get(session, user_id)
    if user is None:  # another tenant's id looks exactly like one that does not exist (RLS hides it)
        raise NotFound("user not found", code="user_not_found")
    return user


def create_user(session: Session, actor: Principal, *, username: str, role: str, permissions: list[str],
                groups: list[str], email: str | None = None, display_name: str | None = None) -> User:
    action = "user.create"
    r = _role(role, actor, action)
    username = username.strip()
    if not username or username.startswith(RESERVED_PREFIXES):
        raise refuse(actor, InvalidInput(f"username must be non-empty and not start with {RESERVED_PREFIXES}",
                                         code="invalid_username"), action, details={"username": username})
    if repo.by_username(session, username) is not None:
        raise refuse(actor, Conflict(f"user {username!r} already exists", code="user_exists"), action,
                     details={"username": username})
    perms = _permissions(permissions, actor, action)
    user = User(id=uuid.uuid4(), tenant_id=actor.tenant_id, username=username, role=r.value, permissions=perms,
                groups=sorted(set(groups)), email=email, display_name=display_name, source="local")
    session.add(user)
    session.flush()
    audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value, action=action,
                 resource_type="user", resource_id=str(user.id),
                 details={"username": username, "role": r.value, "permissions": user.permissions,
                          "groups": user.groups})
    session.refresh(user)
    return user


@dataclass
class Patch:
    role: str | None = None
    permissions: list[str] | None = None
    groups: list[str] | None = None
    active: bool | None = None
    email: str | None = None
    display_name: str | None = None


def _second_admin_policy(session: Session, tenant_id: uuid.UUID) -> bool:
    policy = tenants.settings(session, tenant_id).get(POLICY_SETTING) or {}
    return bool(policy.get("self_grant_requires_second_admin"))


def update_user(session: Session, actor: Principal, user_id: uuid.UUID, patch: Patch) -> User:
    action = "user.update"
    rid = str(user_id)
    new_role = _role(patch.role, actor, action) if patch.role is not None else None
    wanted = set(_permissions(patch.permissions, actor, action)) if patch.permissions is not None else None
    # Role and activity changes lock the active admins first (in id order), then the user: two admins
    # demoting each other at once are serialised (the second sees the first's change) and cannot deadlock.
    admins = repo.lock_admins(session) if patch.role is not None or patch.active is not None else []
    user = repo.get(session, user_id, lock=True)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    if user.source in IDP_SOURCES and (patch.role is not None or patch.permissions is not None
                                       or patch.groups is not None):
        raise refuse(actor, Conflict(f"the role, permissions and groups of a {user.source} user come from the "
                                     "tenant's IdP mapping (PUT /v1/admin/idp-mapping)", code="managed_by_idp"),
                     action, resource_id=rid)
    before = view(user)
    losing_admin = user.role == Role.admin.value and user.is_active and (
        (new_role is not None and new_role != Role.admin) or patch.active is False)
    if losing_admin:
        if admins == [user.id]:
            raise refuse(actor, Conflict("the tenant's last active admin cannot be demoted or deactivated",
                                         code="last_admin"), action, resource_id=rid)
    if wanted is not None:
        added = wanted - set(user.permissions or [])
        if added and user.username == actor.subject and _second_admin_policy(session, actor.tenant_id):
            raise refuse(actor, Forbidden("the tenant's policy needs a second admin to grant you a permission",
                                          code="second_admin_required"), action, resource_id=rid,
                         details={"permissions": sorted(added)})
        user.permissions = sorted(wanted)
    if new_role is not None:
        user.role = new_role.value
    if patch.groups is not None:
        user.groups = sorted(set(patch.groups))
    if patch.email is not None:
        user.email = patch.email
    if patch.display_name is not None:
        user.display_name = patch.display_name
    if patch.active is not None and patch.active != user.is_active:
        # Either way every token issued before stops working: a reactivated account signs in again.
        user.token_version += 1
        user.is_active = patch.active
        user.deactivated_at = None if patch.active else dt.datetime.now(dt.UTC)
        user.deactivated_by = None if patch.active else actor.subject
    user.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    after = view(user)
    changes = {k: {"from": before[k], "to": after[k]} for k in ("role", "permissions", "groups", "active", "email",
                                                                "display_name") if before[k] != after[k]}
    if changes:
        verb = ("user.deactivate" if changes.get("active", {}).get("to") is False
                else "user.reactivate" if "active" in changes else action)
        audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value, action=verb,
                     resource_type="user", resource_id=rid, details={"username": user.username, "changes": changes})
    return user


def revoke_tokens(session: Session, actor: Principal, user_id: uuid.UUID) -> User:
    """End every session of the user: tokens issued before carry the old token version."""
    user = repo.get(session, user_id, lock=True)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    user.token_version += 1
    audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value,
                 action="user.revoke_tokens", resource_type="user", resource_id=str(user.id),
                 details={"username": user.username, "token_version": user.token_version})
    return user


# --------------------------------------------------------------------------- identity-provider users


class Deactivated(PlatformError):
    code = "user_deactivated"
    status_code = 401


def sync_idp_user(session: Session, tenant_id: uuid.UUID, username: str, source: str, role: Role,
                  permissions: frozenset[Permission], groups: tuple[str, ...], *,
                  login: bool = False) -> User | Deactivated:
    """Provision an IdP user on first sign-in, or bring the stored one in line with what the IdP mapping
    gives now (role, permissions, groups); every change is audited. A deactivated account is not
    changed: the refusal is returned (and audited) for the caller to raise after its commit."""
    now = dt.datetime.now(dt.UTC)
    perms = sorted(p.value for p in permissions if p != Permission.steward or role != Role.admin)
    user = repo.by_username(session, username)
    created = None
    if user is None:  # first sign-in (a concurrent one may win the insert: then its row is used)
        created = session.execute(
            insert(User).values(id=uuid.uuid4(), tenant_id=tenant_id, username=username, role=role.value,
                                permissions=perms, groups=list(groups), source=source, last_login_at=now)
            .on_conflict_do_nothing(constraint="uq_users_tenant_username").returning(User.id)).scalar()
        user = repo.by_username(session, username)
    assert user is not None  # inserted above, or there before
    if created is not None:
        audit.record(session, tenant_id=tenant_id, actor=username, actor_role=role.value, action="user.provision",
                     resource_type="user", resource_id=str(user.id),
                     details={"source": source, "role": role.value, "permissions": perms, "groups": list(groups)})
        return user
    if not user.is_active:
        audit.record(session, tenant_id=tenant_id, actor=username, action="auth.signin", outcome="denied",
                     resource_type="user", resource_id=str(user.id), details={"reason": "user_deactivated",
                                                                              "source": source})
        return Deactivated("this account is deactivated")
    changes = {k: {"from": old, "to": new} for k, old, new in (
        ("role", user.role, role.value), ("permissions", sorted(user.permissions or []), perms),
        ("groups", list(user.groups or []), list(groups))) if old != new}
    if changes:
        user.role, user.permissions, user.groups = role.value, perms, list(groups)
        user.updated_at = now
        audit.record(session, tenant_id=tenant_id, actor=username, actor_role=role.value, action="user.idp_sync",
                     resource_type="user", resource_id=str(user.id), details={"source": source, "changes": changes})
    if login:
        user.last_login_at = now
    session.flush()
    return user
