"""MES polling sensors: machine status (default every 60 s) and quality reports (every 5 min).

Per tenant with an MES configured (`PUT /v1/integrations/mes`): poll, store observations, evaluate
the tenant's rules, and launch `mes_alert_job` for breaches that need an alert. The cursor keeps
a per-tenant `since`; it only moves after a successful poll, so nothing is lost while MES is down.
Failures are reported in the tick's skip reason, per tenant.
"""

import json
from collections.abc import Callable

import dagster as dg

from assets.resources import PlatformDatabase
from connectors.mes import MESError
from jobs.mes import mes_alert_job
from monitoring import polling


def _tick(context: dg.SensorEvaluationContext, poll: Callable, label: str) -> dg.SensorResult | dg.SkipReason:
    cursor: dict = json.loads(context.cursor) if context.cursor else {}
    runs: list[dg.RunRequest] = []
    notes: list[str] = []
    tenants = polling.tenants_with_mes()
    for tenant_id, name, cfg in tenants:
        key = str(tenant_id)
        try:
            res = poll(tenant_id, cfg, cursor.get(key, {}))
        except MESError as exc:
            notes.append(f"{name}: {exc.message}")
            context.log.warning(f"{label} poll failed for tenant {name}: {exc.message}")
            continue
        cursor[key] = res.cursor
        notes.append(f"{name}: {res.stored} new observations, {len(res.breaches)} breaches, {res.resolved} resolved")
        for b in res.breaches:
            level = "critical" if b.escalated else "base"
            runs.append(dg.RunRequest(
                run_key=f"{tenant_id}:{b.rule_id}:{b.subject}:{b.episode}:{level}",
                run_config={"ops": {"raise_alerts": {"config": {
                    "tenant_id": key, "breaches_json": json.dumps([b.as_dict()])}}}},
                tags={"eap/tenant": name, "eap/rule": b.rule_name, "eap/subject": b.subject},
            ))
    if not tenants:
        return dg.SkipReason("no tenant has an MES configured (PUT /v1/integrations/mes)")
    if not runs:
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(f"{label}: no new breaches — " + "; ".join(notes))
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(cursor))


def mes_sensors(status_interval_s: int = 60, quality_interval_s: int = 300) -> list[dg.SensorDefinition]:
    """Built when the code location loads, so the intervals come from settings
    (EAP_MES_STATUS_INTERVAL_S, EAP_MES_QUALITY_INTERVAL_S)."""

    @dg.sensor(name="mes_machine_status", job=mes_alert_job, minimum_interval_seconds=status_interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="MES machine status + downtime events → downtime rules.")
    def mes_machine_status(context: dg.SensorEvaluationContext,
                           db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
        return _tick(context, polling.poll_machines, "machine status")

    @dg.sensor(name="mes_quality", job=mes_alert_job, minimum_interval_seconds=quality_interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING, description="MES quality reports → defect-rate rules.")
    def mes_quality(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
        return _tick(context, polling.poll_quality, "quality")

    return [mes_machine_status, mes_quality]


def defs() -> dg.Definitions:
    from core.settings import get_settings

    s = get_settings()
    return dg.Definitions(sensors=mes_sensors(s.mes_status_interval_s, s.mes_quality_interval_s))
