"""The SAP extract job and its schedule (EAP_SAP_EXTRACT_CRON, default every 30 minutes): the four extract
assets of assets/sap.py with their great-expectations checks, for every tenant with an SAP connection."""

import dagster as dg

from assets.sap import EXTRACTS, asset_key

sap_extract_job = dg.define_asset_job(
    "sap_extracts", selection=dg.AssetSelection.assets(*(asset_key(e) for e in EXTRACTS)),
    description="Extract inventory, open purchase orders, materials and cost centres from SAP per tenant, "
                "then check them (great-expectations suites).")


def defs() -> dg.Definitions:
    from core.settings import get_settings

    schedule = dg.ScheduleDefinition(name="sap_extract_schedule", job=sap_extract_job,
                                     cron_schedule=get_settings().sap_extract_cron, execution_timezone="UTC",
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="SAP extracts on a schedule (EAP_SAP_EXTRACT_CRON).")
    return dg.Definitions(jobs=[sap_extract_job], schedules=[schedule])
