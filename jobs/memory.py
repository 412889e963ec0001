"""Memory jobs: nightly maintenance of per-user memories."""

import dagster as dg

from assets.memory import memory_maintenance

memory_job = dg.define_asset_job("maintain_memories", selection=[memory_maintenance])
nightly_memory = dg.ScheduleDefinition(name="nightly_memory_maintenance", job=memory_job, cron_schedule="30 1 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[memory_job], schedules=[nightly_memory])
