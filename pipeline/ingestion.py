"""Document ingestion: submission (API, inbox, CLI share it) and the pipeline stages that the
Dagster assets wrap. Stage products are kept per document *version* (content hash) under
EAP_HOME/pipeline, so a steward's approval run indexes exactly what was reviewed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import sqlalchemy as sa
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from compliance.access import read_filter
from compliance.classification import CLASS_NAMES, classify, parse_class
from compliance.pii import contains_pii, sanitise
from core import audit, index_versions
from core.chunking import ChunkDraft, chunk_elements
from core.database import system_session, tenant_session
from core.enums import SETTLED_STATUSES
from core.errors import Conflict, InvalidInput, NotFound
from core.filestore import FileStore
from core.lexical import K1, B, term_frequencies
from core.models import Chunk, Document, LexicalStats
from core.parsing import EXTENSIONS, MIME, Element, ParsedDocument, UnsupportedFormat, detect_format, parse
from core.settings import get_settings

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
GATED_FROM_CLASS = 3


def file_store() -> FileStore:
    return FileStore(get_settings().file_store_dir)


def clean_filename(name: str | None) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    base = "".join(ch for ch in base if ch.isprintable())
    if not base or base in (".", ".."):
        raise InvalidInput("a file name is required", code="invalid_filename")
    if len(base) > MAX_FILENAME:  # shorten the stem: the extension decides the parser and the type check
        stem, dot, ext = base.rpartition(".")
        if dot and stem and len(ext) <= 16:
            return stem[:MAX_FILENAME - len(ext) - 1] + "." + ext
        return base[:MAX_FILENAME]
    return base


MAX_FILENAME = 255


def parse_acl(groups: list[str] | str | None) -> list[str]:
    if groups is None:
        return []
    items = groups.split(",") if isinstance(groups, str) else [g for x in groups for g in str(x).split(",")]
    out = sorted({g.strip() for g in items if g and g.strip()})
    bad = [g for g in out if not _GROUP.match(g)]
    if bad:
        raise InvalidInput(f"invalid ACL group name(s): {', '.join(bad)}", code="invalid_acl")
    return out


@dataclass(frozen=True)
class Submission:
    document_id: uuid.UUID
    status: str
    created: bool
    unchanged: bool
    content_hash: str
    retried: bool = False  # a failed or stuck document whose unchanged content was queued again


IN_PROGRESS = ("queued", "parsing")


def _stuck(doc: Document, now: dt.datetime) -> bool:
    """In progress, but no run has shown a sign of life for longer than EAP_INGEST_STALE_S (its run died
    or never started): a re-upload retries it instead of answering `unchanged`."""
    if doc.status not in IN_PROGRESS:
        return False
    last = max(t for t in (doc.updated_at, doc.queued_at, doc.ingest_heartbeat_at) if t)
    return (now - last).total_seconds() > get_settings().ingest_stale_s


def _same_name(s, tenant_id: uuid.UUID, key: str, reader: tuple[str, Sequence[str]] | None) -> Document | None:  # noqa: ANN001
    """The document an upload under `key` replaces, if any.

    Names are not identities across access boundaries: only a document the uploader may read (role
    ceiling, and need-to-know for Class III/IV — the steward's approval is not needed, so a pending
    Class IV can be replaced by its readers) is a candidate. An upload that collides with a document the
    uploader cannot read becomes a separate document under a suffixed key (`key#<id>`), and its answer is
    exactly that of a first upload — a new id, `queued`, never `unchanged`. Refusing instead would leak: a
    refusal can only be told apart from a success if the hidden document exists. `reader` None is a
    trusted platform source (inbox folder, `eap ingest` on the server) that sees every document."""
    q = select(Document).where(Document.tenant_id == tenant_id, sa.or_(
        Document.source_key == key, Document.source_key.startswith(key + "#", autoescape=True)))
    if reader is not None:
        q = q.where(read_filter(reader[0], reader[1], Document.classification, Document.acl_groups))
    # Several readable candidates (e.g. an admin with every group): the original name first, else the newest.
    q = q.order_by((Document.source_key == key).desc(), Document.created_at.desc(), Document.id).limit(1)
    return s.execute(q.with_for_update()).scalars().first()


def submit_document(
    tenant_id: uuid.UUID,
    *,
    filename: str,
    stream: BinaryIO,
    classification: str | int | None = None,
    acl_groups: list[str] | str | None = None,
    title: str | None = None,
    actor: str,
    actor_role: str | None = None,
    actor_groups: Sequence[str] | None = None,
    source: str = "upload",
    source_key: str | None = None,
) -> Submission:
    """Validate, store the original bytes and queue the document. Nothing is written unless every
    check passes; an unchanged re-submission changes nothing (unless the document failed or is stuck:
    then it is retried). `actor_role` with `actor_groups` is an API caller: it can only replace
    documents it may read (see `_same_name`); a replacement never lowers the class or drops an ACL."""
    settings = get_settings()
    filename = clean_filename(filename)
    try:
        cls = parse_class(classification)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_classification") from None
    acl = parse_acl(acl_groups)
    if cls >= 3 and not acl:
        raise InvalidInput(
            f"Class {CLASS_NAMES[cls]} documents need at least one need-to-know ACL group (acl_groups)",
            code="acl_required",
        )
    ext = os.path.splitext(filename.lower())[1]
    if ext not in EXTENSIONS:
        raise UnsupportedFormat(f"unsupported file type {ext or '(no extension)'!r}; supported: "
                                + ", ".join(sorted(EXTENSIONS)))
    if title is not None and len(title) > 500:
        raise InvalidInput("title is longer than 500 characters", code="invalid_title")
    store = file_store()
    blob = store.put_stream(stream, settings.max_upload_bytes)
    try:
        fmt = detect_format(filename, blob.path.read_bytes())
    except Exception:
        store.discard(blob)
        raise
    key = source_key or f"{source}:{filename}"
    reader = (actor_role, tuple(actor_groups or ())) if actor_role is not None else None
    with tenant_session(tenant_id) as s:
        s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"doc:{tenant_id}:{key}"})
        _lock_blob(s, blob.sha256)
        if not blob.path.exists():  # a concurrent deletion released the same content after we stored it
            raise Conflict("the upload raced with a deletion of the same content; upload it again",
                           code="upload_conflict")
        doc = _same_name(s, tenant_id, key, reader)
        now = dt.datetime.now(dt.UTC)
        if (
            doc is not None
            and doc.content_hash == blob.sha256
            and cls <= doc.declared_classification  # lower declarations change nothing (see below)
            and set(acl) <= set(doc.acl_groups)
            and (title is None or title == doc.title)
        ):
            if doc.status != "failed" and not _stuck(doc, now):
                return Submission(doc.id, doc.status, created=False, unchanged=True, content_hash=blob.sha256)
            # Failed or stuck: the same bytes are queued again, with a fresh retry budget.
            reason = doc.status_reason
            _requeue(doc, now)
            s.flush()
            audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action="document.retry",
                         resource_type="document", resource_id=str(doc.id),
                         details={"filename": filename, "sha256": blob.sha256, "previous_reason": reason})
            return Submission(doc.id, "queued", created=False, unchanged=False, content_hash=blob.sha256,
                              retried=True)
        created = doc is None
        replaced_hash = None if created else doc.content_hash
        requested = {"class": CLASS_NAMES[cls], "acl_groups": acl}
        if created:
            doc_id = uuid.uuid4()
            taken = s.execute(select(Document.id).where(Document.tenant_id == tenant_id,
                                                        Document.source_key == key)).first() is not None
            doc = Document(id=doc_id, tenant_id=tenant_id, source_key=f"{key}#{doc_id}" if taken else key,
                           source=source, created_by=actor, metadata_={})
            s.add(doc)
        else:
            # A replacement never lowers the class nor drops a need-to-know group: the new version is at
            # least the class of the one it replaces (final, i.e. raised by markers too) and keeps its ACL
            # groups next to the declared ones. Lowering takes a deletion and a new upload (both audited).
            cls = max(cls, doc.classification, doc.declared_classification)
            acl = sorted(set(acl) | set(doc.acl_groups))
        doc.title = title or (doc.title if not created else os.path.splitext(filename)[0])
        doc.filename = filename
        doc.mime_type = MIME[fmt]
        doc.format = fmt
        doc.size_bytes = blob.size
        doc.content_hash = blob.sha256
        doc.storage_path = str(blob.path)
        doc.declared_classification = cls
        doc.classification = max(cls, doc.classification or cls) if not created else cls
        doc.acl_groups = acl
        _requeue(doc, now)
        if doc.reviewed_hash != blob.sha256:
            doc.review_status = None
        s.flush()
        audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role,
                     action="document.submit" if created else "document.resubmit",
                     resource_type="document", resource_id=str(doc.id),
                     details={"filename": filename, "sha256": blob.sha256, "size": blob.size,
                              "declared_class": CLASS_NAMES[cls], "acl_groups": acl, "source": source,
                              **({} if requested == {"class": CLASS_NAMES[cls], "acl_groups": acl}
                                 else {"requested": requested, "kept_from_replaced_version": True})})
        sub = Submission(doc.id, "queued", created=created, unchanged=False, content_hash=blob.sha256)
    if replaced_hash and replaced_hash != blob.sha256:
        release_blob(tenant_id, replaced_hash)  # the replaced original is not kept
    return sub


def _requeue(doc: Document, now: dt.datetime) -> None:
    doc.status = "queued"
    doc.status_reason = None
    doc.queued_at = now
    doc.updated_at = now
    # Ingestion recovery (0015): a new version, or a retry asked for by a re-upload, starts afresh.
    doc.ingest_attempts = 0
    doc.ingest_attempts_hash = None
    doc.ingest_run_id = None
    doc.ingest_heartbeat_at = None


def _lock_blob(s, sha256: str) -> None:  # noqa: ANN001
    """Serialises storing and releasing one content hash (the store is shared by every tenant)."""
    s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"blob:{sha256}"})


def release_blob(tenant_id: uuid.UUID, sha256: str) -> bool:
    """Delete an original from the content-addressed store once no document of any tenant references it.
    The reference check is `eap_blob_in_use` (migration 0013): a SECURITY DEFINER function that answers
    yes/no across tenants, so the application role needs no cross-tenant read."""
    with tenant_session(tenant_id) as s:
        _lock_blob(s, sha256)
        if s.execute(text("SELECT eap_blob_in_use(:h)"), {"h": sha256}).scalar():
            return False
        try:
            file_store().remove(sha256)
        except ValueError:  # not a stored original's hash (documents written straight into the index)
            return False
        return True


def delete_document(tenant_id: uuid.UUID, document_id: uuid.UUID, *, actor: str, actor_role: str | None) -> None:
    with tenant_session(tenant_id) as s:
        doc = s.execute(select(Document).where(Document.id == document_id).with_for_update()).scalar()
        if doc is None:
            raise NotFound("document not found", code="document_not_found")
        remove_chunks(s, tenant_id, document_id)
        s.delete(doc)
        audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action="document.delete",
                     resource_type="document", resource_id=str(document_id),
                     details={"filename": doc.filename, "sha256": doc.content_hash})
        sha = doc.content_hash
    # Deleting deletes: the stage products (parsed, sanitised, chunked text) and the original itself,
    # unless another document (of any tenant: the store is content-addressed) still references it.
    Stages.clear_document(document_id)
    release_blob(tenant_id, sha)


# --------------------------------------------------------------------------- pipeline


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


def set_status(job: DocumentJob, status: str, reason: str | None = None, **fields) -> bool:
    """Update status only if the document still has the version this run is processing."""
    with tenant_session(job.tenant_id) as s:
        res = s.execute(
            update(Document)
            .where(*_held(job))
            .values(status=status, status_reason=reason, updated_at=func.now(), **fields)
        )
        return res.rowcount == 1


def claim(job: DocumentJob, run_id: str, only_queued: bool) -> bool:
    """Take the document for this run (status `parsing`, heartbeat now). A run launched by the intake
    sensor takes only a `queued` document, atomically: two runs never process one document, and a
    run launched for an older version does not redo one that another run already finished."""
    with tenant_session(job.tenant_id) as s:
        where = [Document.id == job.id, Document.content_hash == job.content_hash]
        where.append(Document.status == "queued" if only_queued else Document.status.notin_(("failed", "rejected")))
        res = s.execute(update(Document).where(*where).values(
            status="parsing", status_reason=None, ingest_run_id=run_id, ingest_heartbeat_at=func.now(),
            updated_at=func.now()))
    if res.rowcount != 1:
        return False
    job.claimed_by, job.run_id, job.status = run_id, run_id, "parsing"
    return True


def heartbeat(run_id: str) -> int:
    """Mark the documents this run holds as alive (the intake sensor requeues them when it stops)."""
    with system_session() as s:
        res = s.execute(update(Document)
                        .where(Document.ingest_run_id == run_id, Document.status == "parsing")
                        .values(ingest_heartbeat_at=func.now()))
        return res.rowcount


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
    if set_status(job, "failed", reason):
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

    def write_json(self, name: str, obj) -> None:  # noqa: ANN001
        private_dir(self.dir, self.root)
        _write_private(self.dir / name, json.dumps(obj, ensure_ascii=False).encode())

    def read_json(self, name: str):  # noqa: ANN201
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


def _elements_to_json(els: list[Element]) -> list[dict]:
    return [dataclasses.asdict(e) for e in els]


def _elements_from_json(rows: list[dict]) -> list[Element]:
    return [Element(**r) for r in rows]


class NotHeld(Exception):  # noqa: N818 - a skip, not an error
    """The document is not this run's to process (another run holds it, or it is done)."""


def read_original(job: DocumentJob) -> bytes:
    """The original bytes, only from the content-addressed store and only if they match the hash the
    document was submitted with."""
    store = get_settings().file_store_dir
    path = Path(job.storage_path)
    if not path.is_absolute() or not os.path.realpath(path).startswith(str(store) + os.sep):
        raise ValueError("original is not in the file store")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"original file missing from the store ({path.name})") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != job.content_hash:
        raise ValueError("original in the file store does not match its hash")
    return data


def stage_raw(job: DocumentJob, run_id: str | None = None, only_queued: bool = False) -> dict:
    path = Path(job.storage_path)
    if run_id is not None:
        # Take it first: a failure below is then recorded on the document by this run.
        if not claim(job, run_id, only_queued):
            raise NotHeld(f"document {job.id} is {job.status} (held by run {job.claimed_by or '-'})")
    else:
        set_status(job, "parsing")
    if not path.exists():
        raise FileNotFoundError(f"original file missing from the store ({path.name})")
    Stages.clear_document(job.id, keep=job.content_hash[:16])
    return {"bytes": path.stat().st_size}


def stage_parse(job: DocumentJob) -> ParsedDocument:
    data = read_original(job)
    s = get_settings()
    doc = parse(job.filename, data, ocr_max_pages=s.ocr_max_pages, ocr_timeout_s=s.ocr_timeout_s)
    Stages(job).write_json("parsed.json", {"format": doc.format, "pages": doc.pages, "ocr_pages": doc.ocr_pages,
                                           "title": doc.title(), "elements": _elements_to_json(doc.elements)})
    return doc


def stage_classify(job: DocumentJob) -> dict:
    st = Stages(job)
    parsed = st.read_json("parsed.json")
    full = "\n".join(e["text"] for e in parsed["elements"])
    decision = classify(full, job.declared_classification)
    with tenant_session(job.tenant_id) as s:
        doc = s.get(Document, job.id, with_for_update=True)
        if doc is not None and doc.content_hash == job.content_hash:
            doc.classification = decision.final
            doc.classification_reasons = decision.reasons
            doc.metadata_ = {**doc.metadata_, "pages": parsed["pages"], "ocr_pages": parsed["ocr_pages"],
                             "format": parsed["format"]}
        if decision.raised:
            audit.record(s, tenant_id=job.tenant_id, actor="pipeline", action="document.classification_raised",
                         resource_type="document", resource_id=str(job.id),
                         details={"from": CLASS_NAMES[decision.declared], "to": CLASS_NAMES[decision.final],
                                  "reasons": decision.reasons})
    job.classification = decision.final
    result = {"declared": decision.declared, "final": decision.final, "reasons": decision.reasons}
    st.write_json("classified.json", result)
    return result


def sanitise_elements(els: list[Element], title: str | None, applied: bool) -> tuple[str | None, dict[str, int]]:
    """PII → typed placeholders in place (text and section paths); returns the title and counts."""
    counts: dict[str, int] = {}
    if applied:
        for e in els:
            res = sanitise(e.text)
            e.text = res.text
            for k, v in res.counts.items():
                counts[k] = counts.get(k, 0) + v
            if e.section:
                e.section = sanitise(e.section).text
        if title:
            title = sanitise(title).text
    return title, counts


def stage_sanitise(job: DocumentJob, sanitise_all: bool) -> dict:
    st = Stages(job)
    parsed = st.read_json("parsed.json")
    cls = st.read_json("classified.json")["final"]
    els = _elements_from_json(parsed["elements"])
    applied = cls >= 3 or sanitise_all
    title, counts = sanitise_elements(els, parsed["title"], applied)
    st.write_json("sanitised.json", {"applied": applied, "counts": counts, "title": title,
                                     "elements": _elements_to_json(els)})
    return {"applied": applied, "counts": counts}


def active_build(tenant_id: uuid.UUID) -> index_versions.BuildConfig:
    """New documents are processed the way the tenant's serving index was built."""
    with tenant_session(tenant_id) as s:
        return index_versions.active(s).build


def stage_chunk(job: DocumentJob, build: index_versions.BuildConfig | None = None) -> list[ChunkDraft]:
    st = Stages(job)
    san = st.read_json("sanitised.json")
    build = build or active_build(job.tenant_id)
    chunks = chunk_elements(_elements_from_json(san["elements"]), san["title"] or job.title, build.chunking)
    if not chunks:
        raise ValueError("no chunks produced (document has no text)")
    limit = get_settings().embed_max_chunks
    if len(chunks) > limit:
        raise BudgetExceeded(f"embedding budget exceeded: {len(chunks)} chunks, at most {limit} per document "
                             "(EAP_EMBED_MAX_CHUNKS); split the document")
    st.write_json("chunks.json", [dataclasses.asdict(c) for c in chunks])
    st.write_json("chunking.json", {"chunk_max_tokens": build.chunk_max_tokens,
                                    "chunk_overlap_tokens": build.chunk_overlap_tokens})
    return chunks


class BudgetExceeded(ValueError):
    """A per-document budget (OCR pages or time, embedded chunks) was exceeded: the document fails alone."""


def read_chunks(job: DocumentJob) -> list[ChunkDraft]:
    return [ChunkDraft(**c) for c in Stages(job).read_json("chunks.json")]


def embedding_text(c: ChunkDraft) -> str:
    if c.section and not c.text.startswith(c.section.split(" > ")[-1]):
        return f"{c.section}\n{c.text}"
    return c.text


def stage_embed(jobs: list[DocumentJob], embedder=None) -> dict[str, int]:  # noqa: ANN001
    """Embed the chunks of several documents in shared batches (throughput), store per document.
    Without an explicit embedder each tenant's documents use the model of its serving index."""
    if embedder is None:
        by_model: dict[tuple, list[DocumentJob]] = {}
        builds = {t: active_build(t) for t in {j.tenant_id for j in jobs}}
        for job in jobs:
            b = builds[job.tenant_id]
            by_model.setdefault((b.embedding_model, b.embedding_dim), []).append(job)
        out: dict[str, int] = {}
        for (model, dim), group in by_model.items():
            out.update(stage_embed(group, index_versions.BuildConfig(model, dim, 0, 0).embedder()))
        return out
    per_doc = [(job, read_chunks(job)) for job in jobs]
    texts = [embedding_text(c) for _, chunks in per_doc for c in chunks]
    vectors = embedder.embed(texts)
    out, i = {}, 0
    for job, chunks in per_doc:
        arr = vectors[i : i + len(chunks)]
        i += len(chunks)
        st = Stages(job)
        st.write_array("embeddings.npy", arr)
        st.write_json("embedding.json", {"model": embedder.name, "dim": int(arr.shape[1])})
        out[str(job.id)] = len(chunks)
    return out


def _lock_stats(s, tenant_id: uuid.UUID, generation: int) -> tuple[int, int]:  # noqa: ANN001
    """Lock the lexical statistics row of one index generation: its writers serialise here (so BM25
    statistics stay exact and term_stats upserts cannot deadlock)."""
    s.execute(pg_insert(LexicalStats).values(tenant_id=tenant_id, generation=generation, n_chunks=0, total_len=0)
              .on_conflict_do_nothing(index_elements=["tenant_id", "generation"]))
    row = s.execute(select(LexicalStats.n_chunks, LexicalStats.total_len)
                    .where(LexicalStats.tenant_id == tenant_id, LexicalStats.generation == generation)
                    .with_for_update()).one()
    return int(row[0]), int(row[1])


def remove_chunks(s, tenant_id: uuid.UUID, document_id: uuid.UUID,  # noqa: ANN001
                   generation: int | None = None) -> int:
    """Remove a document's chunks from one generation (or from every generation that has some),
    keeping each generation's BM25 statistics exact."""
    if generation is None:
        gens = s.execute(select(Chunk.generation).where(Chunk.document_id == document_id).distinct()
                         .order_by(Chunk.generation)).scalars().all()
        return sum(remove_chunks(s, tenant_id, document_id, g) for g in gens)
    _lock_stats(s, tenant_id, generation)
    where = (Chunk.document_id == document_id, Chunk.generation == generation)
    old = s.execute(select(func.count(), func.coalesce(func.sum(Chunk.lexical_len), 0)).where(*where)).one()
    if old[0]:
        s.execute(
            text("UPDATE term_stats ts SET df = ts.df - x.n FROM (SELECT ct.term, count(*) AS n FROM chunk_terms ct "
                 "JOIN chunks c ON c.id = ct.chunk_id WHERE c.document_id = :d AND c.generation = :g "
                 "GROUP BY ct.term ORDER BY ct.term) x "
                 "WHERE ts.tenant_id = :t AND ts.generation = :g AND ts.term = x.term"),
            {"d": document_id, "t": tenant_id, "g": generation},
        )
        s.execute(delete(Chunk).where(*where))
        s.execute(
            update(LexicalStats)
            .where(LexicalStats.tenant_id == tenant_id, LexicalStats.generation == generation)
            .values(n_chunks=LexicalStats.n_chunks - old[0], total_len=LexicalStats.total_len - old[1])
        )
    return int(old[0])


def impact(tf: int, length: int, avgdl: float) -> float:
    """The BM25 term-frequency component for the current average length: orders postings so the
    best ones for a term are read first (the exact score is recomputed at query time)."""
    return tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / max(avgdl, 1.0)))


@dataclass(frozen=True)
class IndexTarget:
    """What write_chunks needs to know about the document being written."""

    tenant_id: uuid.UUID
    document_id: uuid.UUID
    classification: int
    acl_groups: list[str]


def write_chunks(s, target: IndexTarget, chunks: list[ChunkDraft], vectors: np.ndarray, model: str,  # noqa: ANN001
                 generation: int, doc_version: int) -> int:
    """Replace the document's chunks in one generation (inside the caller's transaction): chunks,
    BM25 postings, document frequencies and length statistics."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    remove_chunks(s, target.tenant_id, target.document_id, generation)
    n_before, len_before = _lock_stats(s, target.tenant_id, generation)
    analysed = [term_frequencies(f"{c.section or ''}\n{c.text}") for c in chunks]
    total_len = sum(length for _, length in analysed)
    n_all = n_before + len(chunks)
    avgdl = (len_before + total_len) / n_all if n_all else 1.0
    rows, postings = [], []
    df_new: Counter = Counter()
    for c, vec, (tf, length) in zip(chunks, vectors, analysed, strict=True):
        cid = uuid.uuid4()
        rows.append({
            "id": cid, "tenant_id": target.tenant_id, "document_id": target.document_id, "ordinal": c.ordinal,
            "text": c.text, "page": c.page, "section": c.section, "classification": target.classification,
            "acl_groups": list(target.acl_groups), "content_hash": c.content_hash, "token_count": c.token_count,
            "embedding": vec.tolist(), "embedding_model": model, "embedding_dim": int(vec.shape[0]),
            "lexical_len": length, "index_version": doc_version, "generation": generation, "metadata_": c.metadata,
        })
        postings.extend((cid, term, n, length, impact(n, length, avgdl)) for term, n in tf.items())
        df_new.update(tf.keys())
    if rows:
        s.execute(pg_insert(Chunk), rows)
    if postings:
        s.execute(
            text(
                "INSERT INTO chunk_terms (tenant_id, chunk_id, term, tf, classification, acl_groups, lexical_len, "
                "impact, generation) SELECT :t, c, term, tf, :cls, CAST(:acl AS text[]), len, imp, :g FROM unnest("
                "CAST(:c AS uuid[]), CAST(:terms AS text[]), CAST(:tfs AS int[]), CAST(:lens AS int[]), "
                "CAST(:imps AS real[])) AS u(c, term, tf, len, imp)"
            ),
            {"t": target.tenant_id, "cls": target.classification, "acl": list(target.acl_groups), "g": generation,
             "c": [p[0] for p in postings], "terms": [p[1] for p in postings], "tfs": [p[2] for p in postings],
             "lens": [p[3] for p in postings], "imps": [p[4] for p in postings]},
        )
        terms = sorted(df_new)
        s.execute(
            text("INSERT INTO term_stats (tenant_id, generation, term, df) SELECT :t, :g, term, n FROM unnest("
                 "CAST(:terms AS text[]), CAST(:ns AS bigint[])) AS u(term, n) ORDER BY term "
                 "ON CONFLICT (tenant_id, generation, term) DO UPDATE SET df = term_stats.df + EXCLUDED.df"),
            {"t": target.tenant_id, "g": generation, "terms": terms, "ns": [df_new[t] for t in terms]},
        )
    s.execute(
        update(LexicalStats)
        .where(LexicalStats.tenant_id == target.tenant_id, LexicalStats.generation == generation)
        .values(n_chunks=LexicalStats.n_chunks + len(rows), total_len=LexicalStats.total_len + total_len)
    )
    return len(rows)


def write_index(job: DocumentJob, chunks: list[ChunkDraft], vectors: np.ndarray, model: str) -> str:
    """Replace the document's chunks in the tenant's serving index generation, in one transaction:
    readers see the old chunks or the new ones, never a mix, and a failure leaves the old ones
    serving. Holds the tenant's shared index lock, so a promotion cannot flip the pointer meanwhile."""
    with tenant_session(job.tenant_id) as s:
        index_versions.lock_writes(s, job.tenant_id)
        ref = index_versions.active(s)
        doc = s.execute(select(Document).where(Document.id == job.id).with_for_update()).scalar()
        if doc is None or doc.content_hash != job.content_hash:
            return "superseded"
        version = (doc.index_version or 0) + 1
        n = write_chunks(s, IndexTarget(job.tenant_id, job.id, doc.classification, list(doc.acl_groups)), chunks,
                         vectors, model, ref.generation, version)
        doc.status, doc.status_reason = "indexed", None
        doc.chunk_count, doc.index_version, doc.indexed_hash = n, version, job.content_hash
        doc.updated_at = dt.datetime.now(dt.UTC)
        audit.record(s, tenant_id=job.tenant_id, actor="pipeline", action="document.indexed",
                     resource_type="document", resource_id=str(job.id),
                     details={"chunks": n, "index_version": version, "embedding_model": model,
                              "search_index_version": ref.version, "generation": ref.generation,
                              "class": CLASS_NAMES[doc.classification]})
    return "indexed"


def check_no_pii(chunks: list[ChunkDraft], classification: int) -> None:
    """The last line of defence before Class III/IV text is indexed."""
    if classification >= 3:
        leaked = [c.ordinal for c in chunks if contains_pii(c.text)]
        if leaked:
            raise ValueError(f"PII left in Class {CLASS_NAMES[classification]} chunks {leaked[:5]}: not indexed")


def stage_index(job: DocumentJob) -> str:
    """The gate: Class III/IV wait for a steward; approved or ungated documents are indexed. A steward's
    decision is recorded before this runs (assets/ingestion.py `_review`, which consumes the approval)."""
    if job.gated:
        decided = job.reviewed_hash == job.content_hash
        if decided and job.review_status == "rejected":
            with tenant_session(job.tenant_id) as s:
                remove_chunks(s, job.tenant_id, job.id)
                s.execute(update(Document).where(Document.id == job.id).values(
                    status="rejected", status_reason="rejected by data steward", chunk_count=0, indexed_hash=None,
                    updated_at=func.now()))
            Stages.clear_document(job.id)
            return "rejected"
        if not (decided and job.review_status == "approved"):
            set_status(job, "awaiting_approval", f"Class {CLASS_NAMES[job.classification]}: waiting for a data "
                       "steward (Dagster job steward_review)", review_status="pending")
            return "awaiting_approval"
    st = Stages(job)
    try:
        chunks = read_chunks(job)
        check_no_pii(chunks, job.classification)
        model = st.read_json("embedding.json")["model"]
        vectors = st.read_array("embeddings.npy")
    except FileNotFoundError:
        # Another run finished this version (and cleared its stage products) or a newer version
        # superseded it while this run was on its way: nothing of this run's to index.
        if _finished_elsewhere(job):
            return "superseded"
        raise
    build = active_build(job.tenant_id)
    staged = st.read_json("chunking.json") if st.has("chunking.json") else {}
    if model != build.embedding_model or staged.get("chunk_max_tokens", build.chunk_max_tokens) != \
            build.chunk_max_tokens or staged.get("chunk_overlap_tokens", build.chunk_overlap_tokens) != \
            build.chunk_overlap_tokens:
        # The serving index was rebuilt with another configuration while this document was in the
        # pipeline: process it the way the serving index is built.
        chunks = stage_chunk(job, build)
        stage_embed([job], build.embedder())
        model, vectors = build.embedder().name, st.read_array("embeddings.npy")
    outcome = write_index(job, chunks, vectors, model)
    if outcome == "indexed":
        Stages.clear_document(job.id)
    return outcome


def _finished_elsewhere(job: DocumentJob) -> bool:
    with tenant_session(job.tenant_id) as s:
        row = s.execute(select(Document.content_hash, Document.indexed_hash, Document.status, Document.ingest_run_id)
                        .where(Document.id == job.id)).one_or_none()
    if row is None or row.content_hash != job.content_hash:
        return True
    if row.status == "indexed" and row.indexed_hash == job.content_hash:
        return True
    return row.status == "parsing" and row.ingest_run_id is not None and row.ingest_run_id != job.claimed_by


def wait_for(tenant_id: uuid.UUID, ids: list[uuid.UUID], timeout_s: float | None = None,  # noqa: ANN001
             on_progress=None, idle_timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
    """Poll until every document is indexed, awaiting approval, rejected or failed. Gives up after
    `idle_timeout_s` without progress (a status change or a run's heartbeat on one of the documents),
    or after `timeout_s` in total when set: a long batch that keeps moving is waited for."""
    final = SETTLED_STATUSES
    start = last_change = time.monotonic()
    seen = None
    while True:
        with tenant_session(tenant_id) as s:
            found = s.execute(select(Document.id, Document.status, Document.updated_at, Document.ingest_heartbeat_at)
                              .where(Document.id.in_(ids))).all()
        rows = {r.id: r.status for r in found}
        state = sorted((str(r.id), r.status, str(r.updated_at), str(r.ingest_heartbeat_at)) for r in found)
        now = time.monotonic()
        if state != seen:
            seen, last_change = state, now
        if on_progress:
            on_progress(rows)
        if all(rows.get(i) in final for i in ids):
            return rows
        if timeout_s is not None and now - start > timeout_s:
            return rows
        if idle_timeout_s is not None and now - last_change > idle_timeout_s:
            return rows
        time.sleep(poll_s)
