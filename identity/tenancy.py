"""Tenant registry and users. Creating tenants is a platform task (owner role); everything
inside a tenant goes through `tenant_session`."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from compliance import audit
from core.db.database import system_session, tenant_session
from core.enums import Role
from core.errors import InvalidInput, NotFound
from core.models import Tenant, User

_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class TenantRef:
    id: uuid.UUID
    name: str


def validate_tenant_name(name: str) -> str:
    name = name.strip().lower()
    if not _TENANT_NAME.match(name):
        raise InvalidInput(
            f"tenant name {name!r} is invalid: use 1-63 characters a-z, 0-9, '-' or '_', "
            "starting with a letter or digit",
            code="invalid_tenant_name",
        )
    return name


def create_tenant(name: str, display_name: str | None = None) -> tuple[TenantRef, bool]:
    """Create the tenant if absent. Returns (tenant, created)."""
    name = validate_tenant_name(name)
    with system_session() as s:
        row = s.execute(
            insert(Tenant)
            .values(id=uuid.uuid4(), name=name, display_name=display_name or name)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Tenant.id)
        ).scalar()
        created = row is not None
        if not created:
            row = s.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one()
        assert row is not None
        if created:
            from core.models import IndexVersion
            from retrieval.versions import BuildConfig

            s.add(IndexVersion(tenant_id=row, version=1, chunk_generation=1, status="active", kind="initial",
                               reason="created with the tenant", config=BuildConfig.desired().as_dict(),
                               decided_at=dt.datetime.now(dt.UTC)))
            audit.record(s, tenant_id=row, actor="system", action="tenant.create", resource_type="tenant",
                         resource_id=str(row), details={"name": name})
    return TenantRef(row, name), created


def get_tenant(name: str) -> TenantRef:
    name = validate_tenant_name(name)
    with system_session() as s:
        tid = s.execute(select(Tenant.id).where(Tenant.name == name)).scalar()
    if tid is None:
        raise NotFound(f"tenant {name!r} does not exist (create it with `eap tenant create {name}`)",
                       code="tenant_not_found")
    return TenantRef(tid, name)


def ensure_user(tenant: TenantRef, username: str, role: Role, groups: list[str] | None = None) -> uuid.UUID:
    with tenant_session(tenant.id) as s:
        uid = s.execute(
            insert(User)
            .values(id=uuid.uuid4(), tenant_id=tenant.id, username=username, role=role.value, groups=groups or [])
            .on_conflict_do_nothing(constraint="uq_users_tenant_username")
            .returning(User.id)
        ).scalar()
        if uid is not None:
            audit.record(s, tenant_id=tenant.id, actor="system", action="user.create", resource_type="user",
                         resource_id=str(uid), details={"username": username, "role": role.value})
            return uid
        return s.execute(
            select(User.id).where(User.tenant_id == tenant.id, User.username == username)
        ).scalar_one()


def set_tenant_setting(tenant_id: uuid.UUID, key: str, value: dict[str, Any], *, actor: str,
                       actor_role: str) -> dict[str, Any]:
    """Replace one section of the tenant's settings (e.g. "mes", "budgets"), audited."""
    with tenant_session(tenant_id) as s:
        t = s.get(Tenant, tenant_id)
        if t is None:
            raise NotFound("tenant not found", code="tenant_not_found")
        t.settings = {**(t.settings or {}), key: value}
        audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action=f"tenant.settings.{key}",
                     resource_type="tenant", resource_id=str(tenant_id), details=value)
    return value
