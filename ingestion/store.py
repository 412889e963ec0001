"""The stages' store: the document job (its row, claim, status and run heartbeat, so one run holds a
document at a time) and the per-version stage products under EAP_HOME/pipeline/<document>/<version>/,
written owner-only."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from compliance import audit
from core.db.database import rowcount, system_session, tenant_session
from core.enums import DocumentStatus
from core.models import Document
from core.settings import get_settings
from ingestion.parsing import Element

GATED_FROM_CLASS = 3




@dataclass
class DocumentJob:
    id: uuid.UUID
    tenant_id: uuid.UUID
    filename: str
    title: str
    content_hash: str
    storage_path: str
    declared_classification: int
    classification: int
    acl_groups: list[str]
    status: str
    review_status: str | None
    reviewed_hash: str | None
    claimed_by: str | None = None  # the Dagster run holding the document (documents.ingest_run_id)
    run_id: str | None = None  # the run this process belongs to, when the caller knows it

    @property
    def gated(self) -> bool:
        return self.classification >= GATED_FROM_CLASS

    @property
    def held(self) -> bool:
        """This run holds the document (a run that lost it to a newer run leaves it alone)."""
        return self.run_id is None or self.claimed_by == self.run_id


def load_jobs(document_ids: list[str], run_id: str | None = None) -> dict[str, DocumentJob]:
    """Pipeline view of documents across tenants (owner role: a run may span tenants)."""
    ids = [uuid.UUID(d) for d in document_ids]
    with system_session() as s:
        rows = s.execute(select(Document).where(Document.id.in_(ids))).scalars().all()
        return {
            str(d.id): DocumentJob(d.id, d.tenant_id, d.filename, d.title, d.content_hash, d.storage_path,
                                   d.declared_classification, d.classification, list(d.acl_groups), d.status,
                                   d.review_status, d.reviewed_hash, d.ingest_run_id, run_id)
            for d in rows
        }


def _held(job: DocumentJob) -> tuple:
    """WHERE clauses: the document still has this version and, when the run is known, this run holds it."""
    where = [Document.id == job.id, Document.content_hash == job.content_hash]
    if job.run_id is not None:
        where.append(Document.ingest_run_id == job.run_id)
    return tuple(where)


def set_status(job: DocumentJob, status: str, reason: str | None = None, **fields: object) -> bool:
    """Update status only if the document still has the version this run is processing."""
    with tenant_session(job.tenant_id) as s:
        res = s.execute(
            update(Document)
            .where(*_held(job))
            .values(status=status, status_reason=reason, updated_at=func.now(), **fields)
        )
        return rowcount(res) == 1


def claim(job: DocumentJob, run_id: str, only_queued: bool) -> bool:
    """Take the document for this run (status `parsing`, heartbeat now). A run launched by the intake
    sensor takes only a `queued` document, atomically: two runs never process one document, and a
    run launched for an older version does not redo one that another run already finished."""
    with tenant_session(job.tenant_id) as s:
        where = [Document.id == job.id, Document.content_hash == job.content_hash]
        where.append(Document.status == DocumentStatus.queued if only_queued else Document.status.notin_(
            (DocumentStatus.failed, DocumentStatus.rejected)))
        res = s.execute(update(Document).where(*where).values(
            status=DocumentStatus.parsing, status_reason=None, ingest_run_id=run_id, ingest_heartbeat_at=func.now(),
            updated_at=func.now()))
    if rowcount(res) != 1:
        return False
    job.claimed_by, job.run_id, job.status = run_id, run_id, DocumentStatus.parsing
    return True


def heartbeat(run_id: str) -> int:
    """Mark the documents this run holds as alive (the intake sensor requeues them when it stops)."""
    with system_session() as s:
        res = s.execute(update(Document)
                        .where(Document.ingest_run_id == run_id, Document.status == DocumentStatus.parsing)
                        .values(ingest_heartbeat_at=func.now()))
        return rowcount(res)


@contextlib.contextmanager
def embedding_slot() -> Iterator[float]:
    """One run embeds at a time on this host when runs embed in their own process (no embedding service, e.g.
    the container deployments): an exclusive flock on EAP_HOME/embedding.lock, held while a slice's chunks go
    through the model (yields the seconds spent waiting for it). Two runs embedding at once each ran torch with
    one thread per core on the same cores and together reached half the throughput of one (benchmarks/ingest.py,
    1,000 documents: ratio 0.55). Runs that use `eap up`'s embedding service need no slot: the service's fixed
    pool of forward passes queues their requests. The lock dies with its process, so a killed run worker never
    holds it."""
    import fcntl

    path = get_settings().home / "embedding.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield time.perf_counter() - t0
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class Heartbeat:
    """A background thread calling heartbeat(run_id) every EAP_INGEST_HEARTBEAT_S while a stage runs:
    a long OCR or embedding still counts as alive; a killed run worker stops beating."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        interval = get_settings().ingest_heartbeat_s
        while not self._stop.wait(interval):
            try:
                heartbeat(self.run_id or "")
            except Exception:  # noqa: BLE001, S110 - a missed beat is retried; the stage must go on
                pass

    def __enter__(self) -> Heartbeat:
        if self.run_id:
            heartbeat(self.run_id)
            self._thread = threading.Thread(target=self._beat, name="eap-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def mark_failed(job: DocumentJob, stage: str, exc: BaseException) -> str:
    reason = f"{stage}: {getattr(exc, 'message', None) or str(exc) or type(exc).__name__}"[:1000]
    if set_status(job, DocumentStatus.failed, reason):
        with tenant_session(job.tenant_id) as s:
            audit.record(s, tenant_id=job.tenant_id, actor="pipeline", action="document.failed",
                         resource_type="document", resource_id=str(job.id), outcome="failure",
                         details={"stage": stage, "reason": reason})
    return reason


def private_dir(path: Path, base: Path) -> Path:
    """Create `path` (under `base`) with every level from `base` down owner-only (0700): stage
    products hold the unsanitised text of Class IV documents."""
    dirs = [base]
    for part in path.relative_to(base).parts:
        dirs.append(dirs[-1] / part)
    for d in dirs:
        try:
            d.mkdir(mode=0o700, parents=d == base)
        except FileExistsError:
            pass
        if d.stat().st_mode & 0o077:
            d.chmod(0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Write through a 0600 temporary file in the same folder, then publish atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Stages:
    """Per-version stage products: EAP_HOME/pipeline/<document>/<sha256[:16]>/<stage>, owner-only
    (folders 0700, files 0600)."""

    def __init__(self, job: DocumentJob) -> None:
        self.root = get_settings().pipeline_dir
        self.dir = self.root / str(job.id) / job.content_hash[:16]

    def has(self, name: str) -> bool:
        return (self.dir / name).exists()

    def write_json(self, name: str, obj: Any) -> None:
        private_dir(self.dir, self.root)
        _write_private(self.dir / name, json.dumps(obj, ensure_ascii=False).encode())

    def read_json(self, name: str) -> Any:
        return json.loads((self.dir / name).read_text())

    def write_array(self, name: str, arr: np.ndarray) -> None:
        private_dir(self.dir, self.root)
        buf = io.BytesIO()
        np.save(buf, arr)
        _write_private(self.dir / name, buf.getvalue())

    def read_array(self, name: str) -> np.ndarray:
        return np.load(self.dir / name)

    @staticmethod
    def clear_document(document_id: uuid.UUID | str, keep: str | None = None) -> None:
        root: Path = get_settings().pipeline_dir / str(document_id)
        if not root.exists():
            return
        for child in root.iterdir():
            if child.name != keep:
                shutil.rmtree(child, ignore_errors=True)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def elements_to_json(els: list[Element]) -> list[dict]:
    return [dataclasses.asdict(e) for e in els]


def elements_from_json(rows: list[dict]) -> list[Element]:
    return [Element(**r) for r in rows]
