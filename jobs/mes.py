"""The alert job launched by the MES sensors: open (or escalate) de-duplicated alerts, write the
root-cause draft, dispatch to the rule's webhooks and e-mail recipients."""

import json
import uuid
from typing import Any

import dagster as dg
from pydantic import Field

from agents import operational
from assets.resources import PlatformDatabase
from monitoring import alerts, dispatch
from monitoring.rules import Breach


class AlertsConfig(dg.Config):
    tenant_id: str = Field(description="tenant whose rules were breached")
    breaches_json: str = Field(description="JSON list of breaches (set by the MES sensors)")


@dg.op(description="Open/escalate alerts for breached thresholds and notify their channels.")
def raise_alerts(context: dg.OpExecutionContext, config: AlertsConfig, db: PlatformDatabase) -> dict:
    tenant_id = uuid.UUID(config.tenant_id)
    summary: dict[str, Any] = {"opened": 0, "escalated": 0, "duplicate": 0, "deliveries": []}
    for raw in json.loads(config.breaches_json):
        breach = Breach(**raw)
        # The root-cause draft is written by the agent runtime over MES/SAP evidence and documents.
        alert, action = alerts.raise_alert(tenant_id, breach, drafter=operational.alert_root_cause)
        summary[action] += 1
        if action in ("opened", "escalated") and alert is not None:
            results = dispatch.dispatch(tenant_id, alert, dispatch.rule_channels(tenant_id, breach.rule_id), action)
            summary["deliveries"].extend(results)
            context.log.info(f"alert {alert.id} {action}: {breach.message} → {', '.join(results) or 'no channels'}")
    context.add_output_metadata({k: (v if not isinstance(v, list) else dg.MetadataValue.json(v))
                                 for k, v in summary.items()})
    return summary


@dg.job(description="Raise shift alerts from MES threshold breaches (launched by the MES sensors).")
def mes_alert_job() -> None:
    raise_alerts()


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[mes_alert_job])
