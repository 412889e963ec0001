from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from compliance import audit
from core.models import AlertRule, Role
from core.repos import alerts as alerts_repo
from core.repos import tenants
from core.security import Principal
from monitoring.alerts import set_alert_status
from monitoring.dispatch import public_target
from monitoring.polling import configure_mes
from monitoring.sap_extracts import configure_sap
from serving.deps import PrincipalDep, TenantSessionDep, require_role

router = APIRouter(prefix="/v1", tags=["alerts"])


Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class Channels(BaseModel):
    webhooks: list[AnyHttpUrl] = Field(default_factory=list, max_length=10)
    emails: list[Email] = Field(default_factory=list, max_length=50)


RuleKind = Literal["downtime_minutes", "defect_rate", "inventory_below_min"]
Severity = Literal["info", "warning", "critical"]


class RuleIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    kind: RuleKind
    threshold: Annotated[float, Field(gt=0)]
    scope: Annotated[str | None, Field(max_length=100)] = None
    severity: Severity = "warning"
    channels: Channels = Field(default_factory=Channels)
    enabled: bool = True

    @model_validator(mode="after")
    def _units(self) -> RuleIn:
        if self.kind == "defect_rate" and self.threshold >= 1:
            raise ValueError("defect_rate threshold is a fraction (0.05 = 5 %)")
        return self


class RuleOut(RuleIn):
    id: uuid.UUID


class RulesIn(BaseModel):
    rules: list[RuleIn] = Field(max_length=200)

    @model_validator(mode="after")
    def _unique(self) -> RulesIn:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self


class AlertOut(BaseModel):
    id: uuid.UUID
    rule_id: uuid.UUID
    subject: str
    status: str
    severity: str
    value: float | None
    message: str
    root_cause: str | None
    evidence: dict[str, Any]
    notify_count: int
    deliveries: list[dict[str, Any]]
    opened_at: dt.datetime
    acknowledged_by: str | None
    resolved_by: str | None


class MESIntegrationIn(BaseModel):
    base_url: AnyHttpUrl
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2


def _rule_out(r: AlertRule) -> RuleOut:
    return RuleOut(id=r.id, name=r.name, kind=cast(RuleKind, r.kind), threshold=r.threshold, scope=r.scope,
                   severity=cast(Severity, r.severity),
                   channels=Channels(**r.channels), enabled=r.enabled)


@router.get("/alert-rules", response_model=list[RuleOut], dependencies=[require_role(Role.admin)])
def get_rules(db: TenantSessionDep) -> list[RuleOut]:
    return [_rule_out(r) for r in alerts_repo.rules(db)]


@router.put("/alert-rules", response_model=list[RuleOut], dependencies=[require_role(Role.admin)])
def put_rules(body: RulesIn, principal: PrincipalDep, db: TenantSessionDep) -> list[RuleOut]:
    """Replace the tenant's rule set (rules keep their id when their name stays)."""
    gone = alerts_repo.replace_rules(db, principal.tenant_id, [
        {**r.model_dump(exclude={"channels"}), "channels": r.channels.model_dump(mode="json")} for r in body.rules])
    audit.record(db, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                 action="alert_rules.replace", resource_type="alert_rules",
                 details={"rules": [r.model_dump(mode="json") for r in body.rules], "removed": gone})
    return [_rule_out(r) for r in alerts_repo.rules(db)]


@router.get("/alerts", response_model=list[AlertOut])
def list_alerts(db: TenantSessionDep,
                status: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[AlertOut]:
    alerts = alerts_repo.recent(db, status, limit)
    deliveries = {alert_id: [{"channel": d.channel, "target": public_target(d.channel, d.target), "status": d.status,
                              "attempts": d.attempts, "last_error": d.last_error, "at": d.created_at.isoformat()}
                             for d in ds]
                  for alert_id, ds in alerts_repo.deliveries(db, [a.id for a in alerts]).items()}
    return [AlertOut(id=a.id, rule_id=a.rule_id, subject=a.subject, status=a.status, severity=a.severity,
                     value=a.value, message=a.message, root_cause=a.root_cause, evidence=a.evidence,
                     notify_count=a.notify_count, deliveries=deliveries.get(a.id, []), opened_at=a.opened_at,
                     acknowledged_by=a.acknowledged_by, resolved_by=a.resolved_by) for a in alerts]


async def _transition(alert_id: uuid.UUID, principal: Principal, status: str) -> dict[str, Any]:
    a = await run_in_threadpool(set_alert_status, principal.tenant_id, alert_id, status, actor=principal.subject,
                                actor_role=principal.role.value)
    return {"id": str(a.id), "status": a.status}


@router.post("/alerts/{alert_id}/acknowledge", dependencies=[require_role(Role.operator)])
async def acknowledge(alert_id: uuid.UUID, principal: PrincipalDep) -> dict[str, Any]:
    """Acknowledge an open alert (audited)."""
    return await _transition(alert_id, principal, "acknowledged")


@router.post("/alerts/{alert_id}/resolve", dependencies=[require_role(Role.operator)])
async def resolve(alert_id: uuid.UUID, principal: PrincipalDep) -> dict[str, Any]:
    """Resolve an alert (audited). A later breach of the same rule opens a new alert."""
    return await _transition(alert_id, principal, "resolved")


@router.get("/integrations/mes", dependencies=[require_role(Role.admin)])
def get_mes(principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    """This tenant's MES endpoint, if configured."""
    return {"mes": tenants.settings(db, principal.tenant_id).get("mes")}


@router.put("/integrations/mes", dependencies=[require_role(Role.admin)])
def put_mes(body: MESIntegrationIn, principal: PrincipalDep) -> dict[str, Any]:
    """Point this tenant's monitoring at its MES REST endpoint (polled by the Dagster MES sensors)."""
    cfg = configure_mes(principal.tenant_id, body.model_dump(mode="json"), actor=principal.subject,
                        actor_role=principal.role.value)
    return {"mes": cfg}


class SAPIntegrationIn(BaseModel):
    """An SAP Gateway connection. No password field (refused): `password_env` names the environment variable of
    the platform processes that holds it, so the secret never reaches the database or the audit log."""

    model_config = ConfigDict(extra="forbid")
    base_url: AnyHttpUrl
    username: Annotated[str, Field(min_length=1, max_length=40)]
    password_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{2,63}$")] = "EAP_SAP_PASSWORD"  # noqa: S105 - a name
    sap_client: Annotated[str, Field(pattern=r"^\d{3}$")] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2


@router.get("/integrations/sap", dependencies=[require_role(Role.admin)])
def get_sap(principal: PrincipalDep, db: TenantSessionDep) -> dict[str, Any]:
    """This tenant's SAP connection, if configured."""
    return {"sap": tenants.settings(db, principal.tenant_id).get("sap")}


@router.put("/integrations/sap", dependencies=[require_role(Role.admin)])
def put_sap(body: SAPIntegrationIn, principal: PrincipalDep) -> dict[str, Any]:
    """Connect this tenant to its SAP Gateway (OData v2): the extracts (Dagster job sap_extracts) and the agents'
    live reads use it."""
    cfg = configure_sap(principal.tenant_id, body.model_dump(mode="json", exclude_none=True),
                        actor=principal.subject, actor_role=principal.role.value)
    return {"sap": cfg}
