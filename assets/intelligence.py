"""Intelligence-loop assets: nightly memory maintenance (decay, forgetting, compaction, limits)."""

import dagster as dg

from agents import memory
from assets.resources import PlatformDatabase

INTELLIGENCE = "intelligence"


@dg.asset(group_name=INTELLIGENCE, description="Per-user memories kept useful and bounded: importance decays while "
                                               "unused, memories below the floor are forgotten, near-duplicates "
                                               "merged, old episodes summarised, the per-user limit enforced.")
def memory_maintenance(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from core.settings import get_settings

    s = get_settings()
    res = memory.maintain_all()
    per_tenant = res.pop("per_tenant")
    context.log.info(f"memory maintenance: {res}")
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in res.items() if isinstance(v, int)},
        "per_tenant": dg.MetadataValue.json(per_tenant),
        "half_life_days": s.memory_half_life_days, "forget_below": s.memory_forget_below,
        "merge_similarity": s.memory_merge_similarity, "max_per_user": s.memory_max_per_user,
    })


memory_job = dg.define_asset_job("maintain_memories", selection=[memory_maintenance])
nightly_memory = dg.ScheduleDefinition(name="nightly_memory_maintenance", job=memory_job, cron_schedule="30 1 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)
