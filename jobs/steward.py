"""Data steward jobs: the review queue, refreshed every 15 minutes (escalations grow with age) and by the
steward_review_watch sensor when the set of waiting documents changes. The steward's decision itself is job
`steward_review` (jobs/ingestion.py)."""

import dagster as dg

from assets.steward import review_queue

review_queue_job = dg.define_asset_job(
    "steward_review_queue", selection=[review_queue],
    description="Refresh the data steward's review queue and escalate overdue reviews.")
review_queue_schedule = dg.ScheduleDefinition(
    name="steward_review_queue", job=review_queue_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[review_queue_job], schedules=[review_queue_schedule])
