"""Ingestion recovery: what the intake sensor needs to requeue the documents of dead runs.

A document is `queued` (waiting for a run) or `parsing` (held by the run in `ingest_run_id`, which
beats `ingest_heartbeat_at` while it works). When the sensor finds its run gone — failed, canceled,
finished without it, unknown, or silent for EAP_INGEST_STALE_S — `requeue` puts it back in the queue;
after EAP_INGEST_MAX_ATTEMPTS dead runs on one version it is `failed` with the reason, so no document
stays in progress forever and none is retried forever.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import case, func, select, update

from compliance import audit
from core.db.database import rowcount, system_session, tenant_session
from core.enums import DocumentStatus
from core.models import Document

IN_PROGRESS = (DocumentStatus.queued, DocumentStatus.parsing)


@dataclass(frozen=True)
class Pending:
    id: str
    tenant_id: uuid.UUID
    content_hash: str
    status: str
    size_bytes: int
    format: str | None
    run_id: str | None
    heartbeat_at: dt.datetime | None
    updated_at: dt.datetime
    queued_at: dt.datetime
    attempts: int  # dead runs on this version

    @property
    def version(self) -> str:
        return self.content_hash[:16]

    @property
    def queueing(self) -> str:
        """Names this stay in the queue: a new version, a retry by re-upload (new queued_at) or a
        requeue after a dead run (one more attempt) is a new request, never deduplicated away."""
        stamp = f"{int(self.queued_at.timestamp() * 1000):x}"
        return f"{self.version}:{stamp}" + (f":a{self.attempts}" if self.attempts else "")


def pending_documents(limit: int = 5000) -> list[Pending]:
    """Queued and in-progress documents of every tenant, oldest first (owner role)."""
    with system_session() as s:
        rows = s.execute(
            select(Document.id, Document.tenant_id, Document.content_hash, Document.status, Document.size_bytes,
                   Document.format, Document.ingest_run_id, Document.ingest_heartbeat_at, Document.updated_at,
                   Document.queued_at,
                   case((Document.ingest_attempts_hash == Document.content_hash, Document.ingest_attempts),
                        else_=0).label("attempts"))
            .where(Document.status.in_(IN_PROGRESS))
            .order_by(Document.queued_at, Document.id)
            .limit(limit)
        ).all()
    return [Pending(str(r.id), r.tenant_id, r.content_hash, r.status, int(r.size_bytes or 0), r.format,
                    r.ingest_run_id, r.ingest_heartbeat_at, r.updated_at, r.queued_at, int(r.attempts))
            for r in rows]


def requeue(doc: Pending, reason: str, max_attempts: int) -> str:
    """Put a document whose run died back in the queue, or fail it after `max_attempts` dead runs.
    Returns "requeued", "failed", or "moved" when the document changed meanwhile (finished, a newer
    version, another run took it): then nothing is done."""
    attempts = doc.attempts + 1
    give_up = attempts >= max_attempts
    if give_up:
        values = {"status": DocumentStatus.failed,
                  "status_reason": f"ingestion: {reason}; gave up after {attempts} attempts "
                                   f"(EAP_INGEST_MAX_ATTEMPTS={max_attempts}); upload it again to retry"[:1000]}
    else:
        values = {"status": DocumentStatus.queued,
                  "status_reason": f"requeued (attempt {attempts + 1} of {max_attempts}): {reason}"[:1000]}
    with tenant_session(doc.tenant_id) as s:
        where = [Document.id == uuid.UUID(doc.id), Document.content_hash == doc.content_hash,
                 Document.status == doc.status]
        if doc.status == DocumentStatus.parsing:
            where.append(Document.ingest_run_id.is_not_distinct_from(doc.run_id))
        res = s.execute(update(Document).where(*where).values(
            **values, ingest_attempts=attempts, ingest_attempts_hash=doc.content_hash, ingest_run_id=None,
            ingest_heartbeat_at=None, updated_at=func.now()))
        if rowcount(res) != 1:
            return "moved"
        audit.record(s, tenant_id=doc.tenant_id, actor="pipeline",
                     action="document.failed" if give_up else "document.requeued", resource_type="document",
                     resource_id=doc.id, outcome="failure",
                     details={"stage": "run", "reason": values["status_reason"], "run_id": doc.run_id,
                              "attempts": attempts, "sha256": doc.content_hash})
    return "failed" if give_up else "requeued"
