"""Intelligence-loop assets: nightly memory maintenance (decay, forgetting, compaction, limits); its job and
schedule are in jobs/memory.py."""

import dagster as dg

from agents import memory
from assets.resources import EmbedderResource, PlatformDatabase

INTELLIGENCE = "intelligence"


@dg.asset(group_name=INTELLIGENCE, description="Per-user memories kept useful and bounded: importance decays while "
                                               "unused, memories below the floor are forgotten, near-duplicates "
                                               "merged, old episodes summarised, the per-user limit enforced.")
def memory_maintenance(context: dg.AssetExecutionContext, db: PlatformDatabase,
                       embedder: EmbedderResource) -> dg.MaterializeResult:
    from core.settings import get_settings

    s = get_settings()
    res = memory.maintain_all(settings=s, embedder=embedder.get())
    per_tenant = res.pop("per_tenant")
    context.log.info(f"memory maintenance: {res}")
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in res.items() if isinstance(v, int)},
        "per_tenant": dg.MetadataValue.json(per_tenant),
        "half_life_days": s.memory_half_life_days, "forget_below": s.memory_forget_below,
        "merge_similarity": s.memory_merge_similarity, "max_per_user": s.memory_max_per_user,
    })


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[memory_maintenance])
