from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel

from core.errors import Unauthorized
from core.repos import tenants
from serving.deps import PrincipalDep, TenantSessionDep

router = APIRouter(prefix="/v1", tags=["identity"])


class MeOut(BaseModel):
    subject: str
    tenant_id: uuid.UUID
    tenant: str
    role: str
    groups: list[str]
    permissions: list[str] = []


@router.get("/me", response_model=MeOut)
def me(principal: PrincipalDep, db: TenantSessionDep) -> MeOut:
    """Who the bearer token says you are, checked against the tenant registry."""
    name = tenants.name(db, principal.tenant_id)
    if name is None:
        raise Unauthorized("token names a tenant that does not exist", code="unknown_tenant")
    return MeOut(
        subject=principal.display_subject,
        tenant_id=principal.tenant_id,
        tenant=name,
        role=principal.role.value,
        groups=list(principal.groups),
        permissions=sorted(p.value for p in principal.permissions),
    )
