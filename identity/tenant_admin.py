"""The per-tenant settings a tenant admin manages in one place (GET/PATCH /v1/admin/settings), each change
audited as `tenant.settings.<key>` with the value before and after:

- `rate_limit_per_minute`: the tenant's API request budget (read by the API's rate limiter);
- `budgets`: token budgets (daily/monthly tokens, reject or serve extractively: agents.budget);
- `alert_thresholds`: the thresholds of the tenant's existing alert rules, by rule name (monitoring);
- `identity_policy`: e.g. `self_grant_requires_second_admin` (identity.users);
- `model_tiers`: the model tiers the tenant may use within those the platform offers, its default tier,
  per-specialist defaults and what a request for a disallowed tier gets (core/llm/tiers.py; enforced by the
  orchestrator). `offered_tiers` (read-only) lists what the platform offers and each tier's model.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from compliance import audit
from core.errors import InvalidInput, NotFound
from core.llm import tiers
from core.models import AlertRule, Tenant
from core.security import Principal
from core.settings import Settings
from identity.users import refuse

RATE_LIMIT = "rate_limit_per_minute"
BUDGETS = "budgets"
POLICY = "identity_policy"


def _tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    # FOR NO KEY UPDATE: it does not block the FOR KEY SHARE lock an audit record's foreign key takes (a
    # refusal is audited from another transaction while this one is open).
    t = session.get(Tenant, tenant_id, with_for_update={"key_share": True})
    if t is None:
        raise NotFound("tenant not found", code="tenant_not_found")
    return t


def _thresholds(session: Session) -> dict[str, float]:
    return {name: float(th) for name, th in session.execute(select(AlertRule.name, AlertRule.threshold)
                                                            .order_by(AlertRule.name)).all()}


def current(session: Session, tenant_id: uuid.UUID, platform: Settings | None = None) -> dict[str, Any]:
    """The tenant's settings; with the platform's settings also its model tier policy as it applies now and
    the tiers the platform offers (with each tier's model)."""
    settings = _tenant(session, tenant_id).settings or {}
    out = {RATE_LIMIT: settings.get(RATE_LIMIT), BUDGETS: settings.get(BUDGETS) or {},
           "alert_thresholds": _thresholds(session), POLICY: settings.get(POLICY) or {}}
    if platform is not None:
        out[tiers.SETTING] = tiers.stored(settings, platform).as_json()
        out["offered_tiers"] = [{"tier": t, "model": tiers.model_of(t, platform)} for t in tiers.offered(platform)]
    return out


def _set(session: Session, actor: Principal, tenant: Tenant, key: str, value: Any) -> None:
    before = (tenant.settings or {}).get(key)
    if before == value:
        return
    tenant.settings = {**(tenant.settings or {}), key: value}
    audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value,
                 action=f"tenant.settings.{key}", resource_type="tenant", resource_id=str(actor.tenant_id),
                 details={"from": before, "to": value})


def update(session: Session, actor: Principal, changes: dict[str, Any], *, platform: Settings,
           specialists: list[str]) -> dict[str, Any]:
    """Apply the sections present in `changes` (validated by the route's model; `model_tiers` here, against
    the tiers `platform` offers and the `specialists`); returns the new settings."""
    tenant = _tenant(session, actor.tenant_id)
    policy: dict[str, Any] | None = None
    if tiers.SETTING in changes:  # checked before anything is written
        try:
            policy = tiers.parse(changes[tiers.SETTING], platform, specialists).as_json()
        except InvalidInput as exc:
            raise refuse(actor, exc, f"tenant.settings.{tiers.SETTING}", details=exc.details) from None
    if "alert_thresholds" in changes:
        wanted: dict[str, float] = changes["alert_thresholds"]
        rules = {r.name: r for r in session.execute(select(AlertRule).where(AlertRule.name.in_(list(wanted))))
                 .scalars()}
        unknown = sorted(set(wanted) - set(rules))
        if unknown:
            raise refuse(actor, InvalidInput(f"no alert rule named {', '.join(map(repr, unknown))}",
                                             code="unknown_alert_rule"), "tenant.settings.alert_thresholds",
                         details={"rules": unknown})
        for name, threshold in wanted.items():  # all checked before anything is written (and audited)
            if rules[name].kind == "defect_rate" and threshold >= 1:
                raise refuse(actor, InvalidInput("a defect_rate threshold is a fraction (0.05 = 5 %)",
                                                 code="invalid_threshold"), "tenant.settings.alert_thresholds",
                             details={"rule": name})
        for name, threshold in wanted.items():
            rule = rules[name]
            if rule.threshold != threshold:
                audit.record(session, tenant_id=actor.tenant_id, actor=actor.subject, actor_role=actor.role.value,
                             action="tenant.settings.alert_thresholds", resource_type="alert_rule",
                             resource_id=str(rule.id), details={"rule": name, "from": rule.threshold,
                                                                "to": threshold})
                rule.threshold, rule.updated_at = threshold, dt.datetime.now(dt.UTC)
    for key in (RATE_LIMIT, BUDGETS, POLICY):
        if key in changes:
            _set(session, actor, tenant, key, changes[key])
    if policy is not None:
        _set(session, actor, tenant, tiers.SETTING, policy)
    session.flush()
    return current(session, actor.tenant_id, platform)


def set_idp_mapping(session: Session, actor: Principal, raw: object) -> dict[str, Any]:
    """Replace the tenant's IdP mapping; a mapping that would grant admin to everyone (or names an unknown role)
    is refused and the refusal audited."""
    from identity import oidc_mapping

    try:
        mapping = oidc_mapping.parse(raw)
    except InvalidInput as exc:
        raise refuse(actor, exc, f"tenant.settings.{oidc_mapping.SETTING}", details=exc.details) from None
    value = mapping.model_dump(mode="json")
    _set(session, actor, _tenant(session, actor.tenant_id), oidc_mapping.SETTING, value)
    return value


def set_saml(session: Session, actor: Principal, settings: Settings, idp_metadata_xml: str | None) -> dict[str, Any]:
    """Set (or, with None, remove) the tenant's SAML identity provider from its metadata (validated by
    identity.saml: one IdP with a signing certificate); a refusal is audited."""
    from identity import saml
    from identity.tenancy import TenantRef

    config: dict[str, Any] | None = None
    if idp_metadata_xml is not None:
        try:
            config = saml.validate_idp_metadata(settings, TenantRef(actor.tenant_id, actor.tenant), idp_metadata_xml)
        except InvalidInput as exc:
            raise refuse(actor, exc, f"tenant.settings.{saml.SETTING}") from None
    _set(session, actor, _tenant(session, actor.tenant_id), saml.SETTING, config)
    return saml_view(settings, actor.tenant, config)


def saml_view(settings: Settings, tenant: str, config: dict[str, Any] | None) -> dict[str, Any]:
    from identity import saml

    return {"configured": bool(config), "idp_entity_id": (config or {}).get("idp_entity_id"),
            "sp_entity_id": saml.sp_entity_id(settings, tenant), "acs_url": saml.acs_url(settings, tenant)}
