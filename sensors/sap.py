"""SAP sensor: `sap_inventory_alerts` evaluates the tenants' inventory_below_min rules on each new stock
extract and launches `mes_alert_job` (the shared alert job: open/escalate, root-cause draft, dispatch) for
the breaches that need an alert."""

import json

import dagster as dg

from assets.sap import asset_key
from jobs.mes import mes_alert_job
from monitoring import sap_extracts


@dg.asset_sensor(asset_key=asset_key("inventory"), job=mes_alert_job, name="sap_inventory_alerts",
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 description="New SAP stock extract → inventory_below_min rules → alerts.")
def sap_inventory_alerts(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
                         ) -> dg.SensorResult | dg.SkipReason:
    runs: list[dg.RunRequest] = []
    notes: list[str] = []
    for tenant_id, name, _cfg in sap_extracts.tenants_with_sap():
        breaches, cleared, at = sap_extracts.evaluate_inventory(tenant_id)
        if at is None:
            notes.append(f"{name}: no stock extract or no inventory rule")
            continue
        notes.append(f"{name}: {len(breaches)} breaches, {len(cleared)} within limits (stock as of {at:%H:%M})")
        for b in breaches:
            level = "critical" if b.escalated else "base"
            runs.append(dg.RunRequest(
                run_key=f"{tenant_id}:{b.rule_id}:{b.subject}:{b.episode}:{level}",
                run_config={"ops": {"raise_alerts": {"config": {
                    "tenant_id": str(tenant_id), "breaches_json": json.dumps([b.as_dict()])}}}},
                tags={"eap/tenant": name, "eap/rule": b.rule_name, "eap/subject": b.subject}))
    if not runs:
        return dg.SkipReason("inventory: no new breaches — " + ("; ".join(notes) or "no tenant has SAP configured"))
    return dg.SensorResult(run_requests=runs)


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[sap_inventory_alerts])
