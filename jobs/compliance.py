"""Records-management jobs: audit checkpoints (hourly), the nightly audit verification (the asset check alone),
the nightly retention pass, and GDPR request fulfilment (launched by sensors/compliance.py)."""

import dagster as dg

from assets.compliance import audit_chain_verified, audit_checkpoint, gdpr_fulfilment, retention_report

checkpoint_job = dg.define_asset_job("checkpoint_audit_trail", selection=[audit_checkpoint])
hourly_checkpoint = dg.ScheduleDefinition(name="hourly_audit_checkpoint", job=checkpoint_job, cron_schedule="7 * * * *",
                                          default_status=dg.DefaultScheduleStatus.RUNNING)

verify_job = dg.define_asset_job("verify_audit_trail", selection=dg.AssetSelection.checks(audit_chain_verified))
nightly_verify = dg.ScheduleDefinition(name="nightly_audit_verification", job=verify_job, cron_schedule="15 2 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)

retention_job = dg.define_asset_job("apply_retention", selection=[retention_report])
nightly_retention = dg.ScheduleDefinition(name="nightly_retention", job=retention_job, cron_schedule="45 2 * * *",
                                          default_status=dg.DefaultScheduleStatus.RUNNING)

gdpr_job = dg.define_asset_job("process_gdpr_requests", selection=[gdpr_fulfilment])


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[checkpoint_job, verify_job, retention_job, gdpr_job],
                          schedules=[hourly_checkpoint, nightly_verify, nightly_retention])
