"""Dagster assets: thin wrappers over core/compliance/agents. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from assets import indexing, intelligence
from assets.ingestion import ASSETS, CHECKS
from assets.quality import (
    eval_job,
    finetune_dataset,
    finetune_job,
    golden_eval,
    nightly_eval,
    no_eval_regression,
)
from assets.resources import PlatformDatabase


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[*ASSETS, *indexing.ASSETS, finetune_dataset, golden_eval,
                                  intelligence.memory_maintenance],
                          asset_checks=[*CHECKS, *indexing.CHECKS, no_eval_regression],
                          jobs=[*indexing.JOBS, finetune_job, eval_job, intelligence.memory_job],
                          schedules=[indexing.nightly_boosts, nightly_eval, intelligence.nightly_memory],
                          sensors=[indexing.feedback_arrivals],
                          resources={"db": PlatformDatabase()})
