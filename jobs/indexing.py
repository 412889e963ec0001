"""Index-promotion jobs and the nightly boosts schedule. Each job builds a candidate and promotes it
only through the blocking golden-eval check (assets/indexing.py); rollback serves the previous version."""

import dagster as dg

from assets.indexing import active_index, index_candidate

rebuild_job = dg.define_asset_job(
    "rebuild_search_index", selection=[index_candidate, active_index],
    description="Rebuild every tenant's index with the configured embedding model and chunking; promoted only if "
                "the golden evaluation does not regress.",
    config={"ops": {"index_candidate": {"config": {"kind": "rebuild", "reason": "manual rebuild"}}}})
boosts_job = dg.define_asset_job(
    "refresh_source_boosts", selection=[index_candidate, active_index],
    description="Feedback-weighted boosts as a new index version (same chunks), gated like a rebuild.",
    config={"ops": {"index_candidate": {"config": {"kind": "boosts", "reason": "feedback boosts"}}}})
rollback_job = dg.define_asset_job(
    "rollback_search_index", selection=[active_index],
    description="Serve the previous index version of the tenants named in the run config again (caught up with "
                "documents indexed since); for when a promoted version misbehaves in production.",
    config={"ops": {"active_index": {"config": {"rollback": ["default"]}}}})
nightly_boosts = dg.ScheduleDefinition(name="nightly_source_boosts", job=boosts_job, cron_schedule="0 2 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[rebuild_job, boosts_job, rollback_job], schedules=[nightly_boosts])
