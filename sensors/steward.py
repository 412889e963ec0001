"""steward_review_watch: when a document version starts waiting for a data steward, flag its partition
(`steward_review_pending` WARN, with title, class and reasons) and refresh the review queue; when it no
longer waits, clear the flag. The cursor holds the waiting versions already flagged."""

import hashlib
import json

import dagster as dg

from assets.resources import PlatformDatabase
from assets.steward import flag, pending_documents
from jobs.steward import review_queue_job


@dg.sensor(job=review_queue_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Flags each document version that waits for a data steward (asset check per partition) "
                       "and refreshes the review queue when the set of waiting documents changes.")
def steward_review_watch(context: dg.SensorEvaluationContext,
                         db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
    items = pending_documents(db)
    now = {f"{p.document_id}:{p.content_hash[:16]}": p for p in items}
    before: set[str] = set(json.loads(context.cursor)) if context.cursor else set()
    if set(now) == before:
        return dg.SkipReason(f"{len(items)} document(s) waiting for a data steward; nothing changed")
    waiting_docs = {p.document_id for p in items}
    flag(context.instance, [p for key, p in now.items() if key not in before],
         sorted({key.split(":")[0] for key in before - set(now)} - waiting_docs))
    cursor = json.dumps(sorted(now))
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key="queue:" + hashlib.sha256(cursor.encode()).hexdigest())],
                           cursor=cursor)


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[steward_review_watch])
