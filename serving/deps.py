"""Annotated dependency aliases used by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from core.database import tenant_session
from core.errors import Forbidden, Unauthorized
from core.models import Role
from core.security import Principal, verify_token
from core.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def current_principal(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer token", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
    return verify_token(settings, token.strip(), tenant_lookup=_tenant_id)


def _tenant_id(name: str):  # noqa: ANN202
    """OIDC tokens may name the tenant instead of carrying its id."""
    from core.errors import NotFound, PlatformError
    from core.tenancy import get_tenant

    try:
        return get_tenant(name).id
    except (NotFound, PlatformError):
        raise Unauthorized("token names a tenant that does not exist", code="unknown_tenant") from None


PrincipalDep = Annotated[Principal, Depends(current_principal)]

_RANK = {Role.viewer: 0, Role.operator: 1, Role.admin: 2}


def require_role(minimum: Role):
    def _check(principal: PrincipalDep) -> Principal:
        if _RANK[principal.role] < _RANK[minimum]:
            raise Forbidden(f"this action needs the {minimum.value} role", code="insufficient_role")
        return principal

    return Depends(_check)


def tenant_db(principal: PrincipalDep) -> Iterator[Session]:
    with tenant_session(principal.tenant_id) as session:
        yield session


TenantSessionDep = Annotated[Session, Depends(tenant_db)]
