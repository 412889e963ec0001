"""Quality-loop assets: feedback-weighted source boosts for retrieval."""

import dagster as dg

from assets.resources import PlatformDatabase
from quality import feedback

QUALITY = "quality"


@dg.asset(group_name=QUALITY, description="Per-chunk and per-document retrieval boosts from answer feedback "
                                          "(smoothed, bounded to 0.5–2x); retrieval multiplies fused scores by them.")
def source_boosts(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    summary = feedback.compute_boosts()
    n, last = feedback.feedback_count()
    return dg.MaterializeResult(metadata={**summary, "feedback_rows": n, "latest_feedback": last or "none",
                                          "prior_votes": feedback.PRIOR, "bounds": "0.5-2.0"})


@dg.asset(group_name=QUALITY, description="Chat-format JSONL of positively rated answers per tenant, PII-scrubbed, "
                                          "Class III/IV excluded, de-duplicated, with a data card.")
def finetune_dataset(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from quality import finetune

    written = finetune.build()
    return dg.MaterializeResult(metadata={"tenants": len(written),
                                          "records": sum(w["records"] for w in written.values()),
                                          "files": dg.MetadataValue.json(written)})


boosts_job = dg.define_asset_job("refresh_source_boosts", selection=[source_boosts])

nightly_boosts = dg.ScheduleDefinition(name="nightly_source_boosts", job=boosts_job, cron_schedule="0 2 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)
finetune_job = dg.define_asset_job("export_finetune_dataset", selection=[finetune_dataset])


@dg.sensor(job=boosts_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Re-computes boosts when enough new feedback arrived (EAP_FEEDBACK_TRIGGER, default 20).")
def feedback_arrivals(context: dg.SensorEvaluationContext, db: PlatformDatabase):
    from core.settings import get_settings

    n, last = feedback.feedback_count()
    seen = int(context.cursor or 0)
    threshold = get_settings().feedback_trigger
    if n - seen < threshold:
        return dg.SkipReason(f"{n - seen} new feedback since the last refresh (threshold {threshold})")
    context.update_cursor(str(n))
    return dg.RunRequest(run_key=f"boosts:{n}:{last}")
