"""Records-management sensors: GDPR requests waiting to be processed launch `process_gdpr_requests`."""

import dagster as dg

from assets.resources import PlatformDatabase
from jobs.compliance import gdpr_job


@dg.sensor(job=gdpr_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches process_gdpr_requests when GDPR requests are waiting (one run per set of requests).")
def gdpr_requests(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.RunRequest | dg.SkipReason:
    import hashlib

    from sqlalchemy import text

    with db.system() as s:
        ids = [str(r[0]) for r in s.execute(text("SELECT id FROM gdpr_requests WHERE status = 'received' "
                                                 "ORDER BY received_at LIMIT 200"))]
    if not ids:
        return dg.SkipReason("no GDPR request is waiting")
    return dg.RunRequest(run_key="gdpr:" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:32],
                         tags={"eap/gdpr_requests": str(len(ids))})


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[gdpr_requests])
