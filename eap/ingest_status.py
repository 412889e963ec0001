"""What `eap ingest` prints while it waits and when it stops: throughput and ETA, and — when nothing has
moved for --idle-timeout — what is stuck, from evidence rather than a guess: the Dagster daemon's
heartbeat, failed or queued ingestion runs in Dagster's run storage, documents that wait for a data
steward, documents no run has picked up."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from core.enums import SETTLED_STATUSES, DocumentStatus

# A daemon that has not written a heartbeat for this long is not running (it beats every ~20 s).
DAEMON_STALE_S = 90.0
_JOBS = ("ingest_documents", "steward_review")


@dataclass
class Throughput:
    """Documents settled per second since the wait began, and the time the rest would take at that rate."""

    total: int
    started: float = field(default_factory=time.monotonic)

    def line(self, rows: dict[uuid.UUID, str]) -> str:
        done = sum(1 for s in rows.values() if s in SETTLED_STATUSES)
        counts = Counter(rows.values())
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else None
        width = 30
        bar = "#" * int(width * done / self.total) + "." * (width - int(width * done / self.total))
        return (f"[{bar}] {done}/{self.total}  {rate:.2f} docs/s  ETA {_duration(eta)}  "
                f"indexed {counts[DocumentStatus.indexed]}  awaiting approval "
                f"{counts[DocumentStatus.awaiting_approval]}  failed {counts[DocumentStatus.failed]}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def open_instance() -> Any:
    """The platform's Dagster instance (run storage in PostgreSQL, as `eap up` configures it), or None with
    the reason printed by the caller when it cannot be opened."""
    import dagster as dg

    from eap.serve import dagster_env

    env = dagster_env()
    os.environ.setdefault("EAP_DAGSTER_PG_URL", env["EAP_DAGSTER_PG_URL"])
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def diagnose(instance: Any, tenant_id: uuid.UUID, ids: list[uuid.UUID], since: dt.datetime) -> list[str]:
    """One line per finding, most decisive first."""
    from sqlalchemy import select

    from core.db.database import tenant_session
    from core.models import Document

    with tenant_session(tenant_id) as s:
        docs = s.execute(select(Document.id, Document.filename, Document.status, Document.ingest_run_id)
                         .where(Document.id.in_(ids))).all()
    waiting = [d for d in docs if d.status == DocumentStatus.queued and d.ingest_run_id is None]
    in_run = [d for d in docs if d.status in (DocumentStatus.queued, DocumentStatus.parsing) and d.ingest_run_id]
    awaiting = [d for d in docs if d.status == DocumentStatus.awaiting_approval]
    out: list[str] = []
    if instance is None:
        out.append("the Dagster instance could not be opened: nothing is known about the daemon or the runs")
    else:
        out += _daemon(instance)
        out += _runs(instance, since)
    if waiting:
        out.append(f"{len(waiting)} document(s) were never picked up by a run (e.g. {waiting[0].filename}): the "
                   "document_intake sensor launches them — is it running (Dagster UI → Automation)?")
    if in_run:
        out.append(f"{len(in_run)} document(s) are held by a run that stopped reporting progress "
                   f"(run {in_run[0].ingest_run_id}): the intake sensor requeues them once the heartbeat is stale")
    if awaiting:
        out.append(f"{len(awaiting)} document(s) wait for a data steward (Class III/IV): Dagster job "
                   "steward_review with an approval token from POST /v1/documents/{id}/review-token")
    return out


def _daemon(instance: Any) -> list[str]:
    beats = instance.get_daemon_heartbeats() or {}
    if not beats:
        return ["the Dagster daemon has never written a heartbeat to this instance: it is not running "
                "(start `eap up`, or `eap serve dagster-daemon`)"]
    newest = max(h.timestamp for h in beats.values())
    age = time.time() - newest
    if age > DAEMON_STALE_S:
        return [f"the Dagster daemon's last heartbeat is {_duration(age)} old: it is not running "
                "(start `eap up`, or `eap serve dagster-daemon`)"]
    return []


def _runs(instance: Any, since: dt.datetime) -> list[str]:
    import dagster as dg

    out: list[str] = []
    failed = [r for job in _JOBS for r in instance.get_runs(filters=dg.RunsFilter(
        job_name=job, statuses=[dg.DagsterRunStatus.FAILURE], created_after=since))]
    if failed:
        run = failed[0]
        out.append(f"{len(failed)} {run.job_name} run(s) failed since the wait began, e.g. {run.run_id}: "
                   f"{_failure_of(instance, run.run_id)}")
    queued = instance.get_runs(filters=dg.RunsFilter(job_name="ingest_documents",
                                                     statuses=[dg.DagsterRunStatus.QUEUED]))
    if queued:
        out.append(f"{len(queued)} ingestion run(s) are queued and not started: the run coordinator starts "
                   "them as running ones finish (dagster.yaml max_concurrent_runs)")
    return out


def _failure_of(instance: Any, run_id: str) -> str:
    import dagster as dg

    for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=kind, limit=1).records
        for rec in records:
            entry = rec.event_log_entry
            ev = entry.dagster_event
            err = getattr(getattr(ev, "event_specific_data", None), "error", None) if ev else None
            msg = (err.message if err is not None else entry.user_message or "").strip().splitlines()
            if msg:
                return msg[0][:300]
    return "no error message recorded"
