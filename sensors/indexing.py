"""Index sensors: a boosts refresh once enough new feedback has arrived."""

import dagster as dg

from assets.resources import PlatformDatabase
from jobs.indexing import boosts_job


@dg.sensor(job=boosts_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Refreshes boosts when enough new feedback arrived (EAP_FEEDBACK_TRIGGER, default 20).")
def feedback_arrivals(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.RunRequest | dg.SkipReason:
    from core.settings import get_settings
    from evals import feedback

    n, last = feedback.feedback_count()
    seen = int(context.cursor or 0)
    threshold = get_settings().feedback_trigger
    if n - seen < threshold:
        return dg.SkipReason(f"{n - seen} new feedback since the last refresh (threshold {threshold})")
    context.update_cursor(str(n))
    return dg.RunRequest(run_key=f"boosts:{n}:{last}")


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[feedback_arrivals])
