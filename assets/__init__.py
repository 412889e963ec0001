"""Dagster assets: thin wrappers over core/compliance/agents. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import ASSETS, CHECKS
from assets.quality import (
    boosts_job,
    feedback_arrivals,
    finetune_dataset,
    finetune_job,
    nightly_boosts,
    source_boosts,
)
from assets.resources import PlatformDatabase


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[*ASSETS, source_boosts, finetune_dataset], asset_checks=CHECKS,
                          jobs=[boosts_job, finetune_job],
                          schedules=[nightly_boosts], sensors=[feedback_arrivals],
                          resources={"db": PlatformDatabase()})
