"""Dagster assets: thin wrappers over core/compliance/agents. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import ASSETS, CHECKS
from assets.quality import (
    boosts_job,
    eval_job,
    feedback_arrivals,
    finetune_dataset,
    finetune_job,
    golden_eval,
    nightly_boosts,
    nightly_eval,
    no_eval_regression,
    source_boosts,
)
from assets.resources import PlatformDatabase


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[*ASSETS, source_boosts, finetune_dataset, golden_eval],
                          asset_checks=[*CHECKS, no_eval_regression], jobs=[boosts_job, finetune_job, eval_job],
                          schedules=[nightly_boosts, nightly_eval], sensors=[feedback_arrivals],
                          resources={"db": PlatformDatabase()})
