"""Per-tenant mapping from an identity provider's groups and claims to a role, permissions and
need-to-know ACL groups. One mapping serves OIDC tokens (claims) and SAML assertions (attributes).

Stored as the tenant setting `idp_mapping`:
    {"rules": [{"claim": "groups", "value": "plant-admins", "role": "admin", "permissions": ["steward"],
                "groups": ["qa"]}, ...],
     "default_role": "viewer"}        # optional: the role of a user no rule gives one (never admin)

A rule matches when the claim (a string or a list of strings) holds exactly `value`. The strongest role
of the matching rules wins; permissions and groups are the union of the matching rules'. Rules that would
give admin to everyone are refused: a default role of admin, an empty or wildcard value, or a claim every
token carries (issuer, audience, subject, tenant …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from core.enums import Permission, Role
from core.errors import InvalidInput

SETTING = "idp_mapping"
# Claims every token of the IdP carries: matching on them matches everyone.
UNIVERSAL_CLAIMS = frozenset({"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "azp", "tid", "tenant", "auth_time",
                              "nonce", "sid", "typ"})
_WILDCARDS = ("*", "?", "%", ".*", "[", "]")
_NAME = Annotated[str, Field(min_length=1, max_length=200)]


class MappingRule(BaseModel):
    claim: _NAME
    value: _NAME
    role: Role | None = None
    permissions: list[Permission] = Field(default_factory=list, max_length=10)
    groups: list[_NAME] = Field(default_factory=list, max_length=100)

    @field_validator("claim", "value")
    @classmethod
    def _exact(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("an empty value reads as 'match everyone': a rule matches one exact value")
        if any(w in v for w in _WILDCARDS):
            raise ValueError(f"{v!r} looks like a wildcard that would match everyone: a rule matches one exact "
                             "value, no patterns")
        return v

    @field_validator("claim")
    @classmethod
    def _specific(cls, v: str) -> str:
        if v.lower() in UNIVERSAL_CLAIMS:
            raise ValueError(f"claim {v!r} is carried by every token: a rule on it would match everyone")
        return v

    @model_validator(mode="after")
    def _grants_something(self) -> MappingRule:
        if self.role is None and not self.permissions and not self.groups:
            raise ValueError("a rule must grant a role, permissions or groups")
        return self


class IdpMapping(BaseModel):
    rules: list[MappingRule] = Field(default_factory=list, max_length=500)
    default_role: Role | None = None

    @field_validator("default_role")
    @classmethod
    def _not_admin(cls, v: Role | None) -> Role | None:
        if v == Role.admin:
            raise ValueError("a default role of admin would grant admin to everyone the IdP signs in")
        return v


@dataclass(frozen=True)
class Mapped:
    role: Role
    permissions: frozenset[Permission]
    groups: tuple[str, ...]


def _values(claim: Any) -> set[str]:
    if isinstance(claim, str):
        return {claim}
    if isinstance(claim, list | tuple):
        return {v for v in claim if isinstance(v, str)}
    return set()


def parse(raw: object) -> IdpMapping:
    """A mapping from an admin's request or the stored setting; InvalidInput (422) with the reasons."""
    try:
        return IdpMapping.model_validate(raw)
    except ValidationError as exc:
        reasons: list[dict[str, Any]] = [{"loc": list(e["loc"]), "msg": str(e["msg"])}
                                         for e in exc.errors(include_url=False)]
        wildcard_admin = any("everyone" in r["msg"] for r in reasons)
        unknown_role = any(r["loc"] and r["loc"][-1] in ("role", "default_role") for r in reasons)
        code = ("mapping_grants_everyone" if wildcard_admin else "unknown_role" if unknown_role
                else "invalid_mapping")
        raise InvalidInput("the IdP mapping is invalid: " + "; ".join(str(r["msg"]) for r in reasons[:5]),
                           code=code, details={"errors": reasons}) from None


def stored(settings: dict[str, Any]) -> IdpMapping | None:
    """The tenant's mapping, or None when it has none (OIDC roles then come from the roles claim)."""
    raw = settings.get(SETTING)
    return IdpMapping.model_validate(raw) if raw else None


def evaluate(mapping: IdpMapping, claims: dict[str, Any]) -> Mapped | None:
    """The role, permissions and groups the claims earn; None when they earn no role."""
    role: Role | None = mapping.default_role
    permissions: set[Permission] = set()
    groups: list[str] = []
    for rule in mapping.rules:
        if rule.value not in _values(claims.get(rule.claim)):
            continue
        if rule.role is not None and (role is None or rule.role.rank > role.rank):
            role = rule.role
        permissions.update(rule.permissions)
        groups.extend(g for g in rule.groups if g not in groups)
    if role is None:
        return None
    if role == Role.admin:
        permissions.add(Permission.steward)
    return Mapped(role, frozenset(permissions), tuple(groups))
