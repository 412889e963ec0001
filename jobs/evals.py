"""Evaluation jobs: the nightly golden evaluation (scheduled) and the approved fine-tuning export."""

import dagster as dg

from assets.evals import finetune_dataset, golden_eval

eval_job = dg.define_asset_job("nightly_golden_eval", selection=[golden_eval])
nightly_eval = dg.ScheduleDefinition(name="nightly_golden_eval", job=eval_job, cron_schedule="0 3 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)

finetune_job = dg.define_asset_job("export_finetune_dataset", selection=[finetune_dataset])


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[eval_job, finetune_job], schedules=[nightly_eval])
