"""Annotated dependency aliases used by every router."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from agents.deps import AgentDeps, build_deps
from core.db.database import tenant_session
from core.embedding import Embedder, get_embedder
from core.errors import Forbidden, Unauthorized
from core.llm import Model, default_model
from core.models import Role
from core.repos import tenants
from core.security import Principal
from core.settings import Settings, get_settings
from identity import api_keys, principals

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_model() -> Model:
    """The Model seam a request's AgentDeps carries (tests override this dependency with the scripted
    double of core.llm.testing)."""
    return default_model()


ModelDep = Annotated[Model, Depends(get_model)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


def agent_deps(session: Session, principal: Principal, model: Model, settings: Settings | None = None) -> AgentDeps:
    """The AgentDeps of one request: its session, the principal as the caller, and the request's model."""
    return build_deps(session, subject=principal.subject, role=principal.role.value, groups=principal.groups,
                      tenant_id=principal.tenant_id, tenant=principal.tenant, settings=settings, model=model)


def authenticate(settings: Settings, authorization: str | None, path: str | None = None) -> Principal:
    """The principal of an `Authorization: Bearer` header: a valid token (or API key) of a tenant that exists,
    with the tenant's user records applied (identity.principals: deactivated accounts and revoked tokens
    refused, admin-granted permissions, IdP mapping); an API key only on the paths it is scoped to."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer token", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
    principal = principals.resolve(settings, token.strip(), tenant_lookup=_tenant_id)
    if not _tenant_exists(principal.tenant_id):
        # A well-signed token for a tenant that is gone (or never was) authenticates nobody.
        raise Unauthorized("token names a tenant that does not exist", code="unknown_tenant")
    if path is not None:
        api_keys.check_path(principal, path)
    return principal


def current_principal(request: Request, settings: SettingsDep,
                      authorization: Annotated[str | None, Header()] = None) -> Principal:
    # The request guard (serving.app.RequestGuard) authenticated the request before its body was
    # read; reuse that principal rather than verifying the token twice.
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return principal
    return authenticate(settings, authorization, request.url.path)


_TENANT_CACHE_S = 30.0
_known_tenants: dict[uuid.UUID, float] = {}


def _tenant_exists(tenant_id: uuid.UUID) -> bool:
    """Checked as the application role (RLS shows a tenant its own row only); positive answers are
    cached briefly, so a request costs no extra query."""
    now = time.monotonic()
    seen = _known_tenants.get(tenant_id)
    if seen is not None and now - seen < _TENANT_CACHE_S:
        return True
    with tenant_session(tenant_id) as s:
        found = tenants.name(s, tenant_id) is not None
    if found:
        if len(_known_tenants) > 10_000:
            _known_tenants.clear()
        _known_tenants[tenant_id] = now
    return found


def _tenant_id(name: str) -> uuid.UUID:
    """OIDC tokens may name the tenant instead of carrying its id."""
    from core.errors import NotFound, PlatformError
    from identity.tenancy import get_tenant

    try:
        return get_tenant(name).id
    except (NotFound, PlatformError):
        raise Unauthorized("token names a tenant that does not exist", code="unknown_tenant") from None


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_role(minimum: Role) -> Any:
    def _check(principal: PrincipalDep) -> Principal:
        if not Role(principal.role).at_least(minimum):
            raise Forbidden(f"this action needs the {minimum.value} role", code="insufficient_role")
        return principal

    return Depends(_check)


def tenant_db(principal: PrincipalDep) -> Iterator[Session]:
    """One transaction per request, as the application role, scoped to the caller's tenant by RLS. Routes pass
    it to repositories and use cases; an exception rolls it back."""
    with tenant_session(principal.tenant_id) as session:
        yield session


# scope="function": the transaction commits when the route returns, before the response is sent, so a
# client never sees a success whose commit then failed.
TenantSessionDep = Annotated[Session, Depends(tenant_db, scope="function")]
