"""Tenant administration (tenant admins only; API keys never reach it): users and roles, API keys, the IdP
mapping, SAML, and the tenant's settings. Everything is scoped to the caller's tenant by row-level security:
another tenant's ids answer 404 like ids that do not exist. Every change and every refusal is audited."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from agents.specialists import SPECIALISTS
from core.models import Role
from core.settings import get_settings
from identity import api_keys, oidc_mapping, tenant_admin
from identity import users as users_uc
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[require_role(Role.admin)])

Name = Annotated[str, Field(min_length=1, max_length=200)]


class UserIn(BaseModel):
    username: Name
    role: Annotated[str, Field(max_length=50)] = Role.viewer.value
    permissions: list[Annotated[str, Field(max_length=50)]] = Field(default_factory=list, max_length=10)
    groups: list[Name] = Field(default_factory=list, max_length=100)
    email: Annotated[str | None, Field(max_length=254)] = None
    display_name: Annotated[str | None, Field(max_length=200)] = None


class UserPatch(BaseModel):
    role: Annotated[str | None, Field(max_length=50)] = None
    permissions: list[Annotated[str, Field(max_length=50)]] | None = Field(default=None, max_length=10)
    groups: list[Name] | None = Field(default=None, max_length=100)
    active: bool | None = None
    email: Annotated[str | None, Field(max_length=254)] = None
    display_name: Annotated[str | None, Field(max_length=200)] = None


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    email: str | None
    display_name: str | None
    role: str
    permissions: list[str]
    groups: list[str]
    source: str
    active: bool
    deactivated_at: dt.datetime | None
    deactivated_by: str | None
    last_login_at: dt.datetime | None
    created_at: dt.datetime
    local_login: bool


@router.get("/users", response_model=list[UserOut])
def list_users(db: TenantSessionDep) -> list[UserOut]:
    from core.repos import users as repo

    return [UserOut(**users_uc.view(u)) for u in repo.list_users(db)]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, principal: PrincipalDep, db: TenantSessionDep) -> UserOut:
    """A local user (sign-in with a platform token; a break-glass password is set with `eap user set-password`)."""
    user = users_uc.create_user(db, principal, username=body.username, role=body.role, permissions=body.permissions,
                                groups=body.groups, email=body.email, display_name=body.display_name)
    return UserOut(**users_uc.view(user))


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: uuid.UUID, db: TenantSessionDep) -> UserOut:
    return UserOut(**users_uc.view(users_uc.get_user(db, user_id)))


@router.patch("/users/{user_id}", response_model=UserOut)
def patch_user(user_id: uuid.UUID, body: UserPatch, principal: PrincipalDep, db: TenantSessionDep) -> UserOut:
    """Change role, permissions, groups or activity. Deactivation (or reactivation) ends every session of the
    user; the last active admin cannot be demoted or deactivated."""
    patch = users_uc.Patch(**body.model_dump(exclude_unset=True))
    return UserOut(**users_uc.view(users_uc.update_user(db, principal, user_id, patch)))


@router.delete("/users/{user_id}", response_model=UserOut)
def deactivate_user(user_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> UserOut:
    """Deactivate (users are never deleted: the audit trail keeps them as actors)."""
    return UserOut(**users_uc.view(users_uc.update_user(db, principal, user_id, users_uc.Patch(active=False))))


@router.post("/users/{user_id}/revoke-tokens", response_model=UserOut)
def revoke_tokens(user_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> UserOut:
    """End every session of the user (its tokens stop working; it signs in again)."""
    return UserOut(**users_uc.view(users_uc.revoke_tokens(db, principal, user_id)))


# --------------------------------------------------------------------------- API keys


class ApiKeyIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Annotated[str, Field(max_length=50)] = Role.viewer.value
    allowed_prefixes: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=50)
    groups: list[Name] = Field(default_factory=list, max_length=100)
    expires_in_days: Annotated[int, Field(ge=1, le=api_keys.MAX_DAYS)] = 90


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    role: str
    groups: list[str]
    allowed_prefixes: list[str]
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_by: str | None
    last_used_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime


class ApiKeyCreated(ApiKeyOut):
    key: str  # shown once: only its hash is stored


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_keys(db: TenantSessionDep) -> list[ApiKeyOut]:
    from core.repos import users as repo

    return [ApiKeyOut(**api_keys.view(k)) for k in repo.list_keys(db)]


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyIn, principal: PrincipalDep, db: TenantSessionDep) -> ApiKeyCreated:
    """Create a key; the response is the only time the key is shown."""
    key, secret = api_keys.create(db, principal, name=body.name, role=body.role,
                                  allowed_prefixes=body.allowed_prefixes, groups=body.groups,
                                  expires_in_days=body.expires_in_days)
    db.refresh(key)
    return ApiKeyCreated(**api_keys.view(key), key=secret)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
def revoke_key(key_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> ApiKeyOut:
    return ApiKeyOut(**api_keys.view(api_keys.revoke(db, principal, key_id)))


# --------------------------------------------------------------------------- identity providers


@router.get("/idp-mapping")
def get_mapping(principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    from core.repos import tenants

    mapping = oidc_mapping.stored(tenants.settings(db, principal.tenant_id))
    return mapping.model_dump(mode="json") if mapping else {"rules": [], "default_role": None}


@router.put("/idp-mapping")
def put_mapping(principal: PrincipalDep, db: TenantSessionDep,
                body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Replace the mapping from IdP groups/claims (OIDC) and attributes (SAML) to role, permissions and
    need-to-know groups; applied at each user's next sign-in. A mapping that would grant admin to everyone
    (default role admin, an empty or wildcard value, a claim every token carries) is refused."""
    return tenant_admin.set_idp_mapping(db, principal, body)


class SamlIn(BaseModel):
    idp_metadata_xml: Annotated[str | None, Field(max_length=200_000)]


@router.get("/saml")
def get_saml(principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    from core.repos import tenants

    config = tenants.settings(db, principal.tenant_id).get("saml")
    return tenant_admin.saml_view(get_settings(), principal.tenant, config)


@router.put("/saml")
def put_saml(body: SamlIn, principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    """The tenant's SAML identity provider, from its metadata XML (null removes it)."""
    return tenant_admin.set_saml(db, principal, get_settings(), body.idp_metadata_xml)


# --------------------------------------------------------------------------- tenant settings


class BudgetsIn(BaseModel):
    daily_tokens: Annotated[int | None, Field(ge=1)] = None
    monthly_tokens: Annotated[int | None, Field(ge=1)] = None
    on_exceed: Literal["reject", "extractive"] = "reject"


class PolicyIn(BaseModel):
    self_grant_requires_second_admin: bool = False


class TierPolicyIn(BaseModel):
    """Tier names are checked by core.llm.tiers (unknown → 422 `unknown_tier`, not offered by the platform →
    422 `tier_not_offered`, outside `allowed` → 422 `tier_not_allowed`, unknown specialist → 422
    `unknown_specialist`), so each refusal has its own code."""

    model_config = ConfigDict(extra="forbid")
    allowed: list[Annotated[str, Field(max_length=20)]] = Field(min_length=1, max_length=6)
    default: Annotated[str | None, Field(max_length=20)] = None
    specialists: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=20)]] = Field(
        default_factory=dict, max_length=50)
    on_disallowed: Literal["refuse", "downgrade"] = "refuse"


class OfferedTier(BaseModel):
    tier: str
    model: str


class SettingsPatch(BaseModel):
    rate_limit_per_minute: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    budgets: BudgetsIn | None = None
    alert_thresholds: dict[Annotated[str, Field(max_length=100)], Annotated[float, Field(gt=0)]] | None = None
    identity_policy: PolicyIn | None = None
    model_tiers: TierPolicyIn | None = None


class SettingsOut(BaseModel):
    rate_limit_per_minute: int | None
    budgets: dict[str, Any]
    alert_thresholds: dict[str, float]
    identity_policy: dict[str, Any]
    model_tiers: dict[str, Any]  # the policy as it applies now (every offered tier when none is stored)
    offered_tiers: list[OfferedTier]  # what the platform offers (EAP_LLM_TIERS) and each tier's model


@router.get("/settings", response_model=SettingsOut)
def get_tenant_settings(principal: PrincipalDep, db: TenantSessionDep) -> SettingsOut:
    return SettingsOut(**tenant_admin.current(db, principal.tenant_id, get_settings()))


@router.patch("/settings", response_model=SettingsOut)
def patch_tenant_settings(body: SettingsPatch, principal: PrincipalDep, db: TenantSessionDep) -> SettingsOut:
    """Change the sections present in the body: the tenant's request rate limit per minute, token budgets,
    alert rule thresholds (by rule name), identity policy, model tiers (`allowed` within `offered_tiers`,
    `default`, per-`specialists` defaults, `on_disallowed`: refuse or downgrade a request for another tier).
    Each change is audited with before and after; each refusal too."""
    changes = {k: (v.model_dump(exclude_none=k != "model_tiers") if isinstance(v, BaseModel) else v)
               for k, v in ((k, getattr(body, k)) for k in body.model_fields_set) if v is not None}
    return SettingsOut(**tenant_admin.update(db, principal, changes, platform=get_settings(),
                                             specialists=list(SPECIALISTS)))
