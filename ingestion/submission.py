"""Document submission, shared by the API, the inbox sensor and the CLI: file-name and ACL
cleaning, submit (a new document or a new version of one), delete, and waiting for the pipeline."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from compliance import audit, holds
from compliance.access import read_filter
from compliance.classification import CLASS_NAMES, parse_class
from core.db.database import tenant_session
from core.enums import SETTLED_STATUSES, DocumentStatus
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Document
from core.settings import get_settings
from ingestion.filestore import FileStore
from ingestion.parsing import EXTENSIONS, MIME, UnsupportedFormat, detect_format
from ingestion.store import Stages
from retrieval.writer import remove_chunks

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")


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


IN_PROGRESS = (DocumentStatus.queued, DocumentStatus.parsing)


def _stuck(doc: Document, now: dt.datetime) -> bool:
    """In progress, but no run has shown a sign of life for longer than EAP_INGEST_STALE_S (its run died
    or never started): a re-upload retries it instead of answering `unchanged`."""
    if doc.status not in IN_PROGRESS:
        return False
    last = max(t for t in (doc.updated_at, doc.queued_at, doc.ingest_heartbeat_at) if t)
    return (now - last).total_seconds() > get_settings().ingest_stale_s


def _same_name(s: Session, tenant_id: uuid.UUID, key: str, reader: tuple[str, Sequence[str]] | None) -> Document | None:
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
            if doc.status != DocumentStatus.failed and not _stuck(doc, now):
                return Submission(doc.id, doc.status, created=False, unchanged=True, content_hash=blob.sha256)
            # Failed or stuck: the same bytes are queued again, with a fresh retry budget.
            reason = doc.status_reason
            _requeue(doc, now)
            s.flush()
            audit.record(s, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action="document.retry",
                         resource_type="document", resource_id=str(doc.id),
                         details={"filename": filename, "sha256": blob.sha256, "previous_reason": reason})
            return Submission(doc.id, DocumentStatus.queued, created=False, unchanged=False, content_hash=blob.sha256,
                              retried=True)
        created = doc is None
        replaced_hash = None if doc is None else doc.content_hash
        requested = {"class": CLASS_NAMES[cls], "acl_groups": acl}
        if doc is None:
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
        sub = Submission(doc.id, DocumentStatus.queued, created=created, unchanged=False, content_hash=blob.sha256)
    if replaced_hash and replaced_hash != blob.sha256:
        release_blob(tenant_id, replaced_hash)  # the replaced original is not kept
    return sub


def _requeue(doc: Document, now: dt.datetime) -> None:
    doc.status = DocumentStatus.queued
    doc.status_reason = None
    doc.queued_at = now
    doc.updated_at = now
    # Ingestion recovery (0015): a new version, or a retry asked for by a re-upload, starts afresh.
    doc.ingest_attempts = 0
    doc.ingest_attempts_hash = None
    doc.ingest_run_id = None
    doc.ingest_heartbeat_at = None


def _lock_blob(s: Session, sha256: str) -> None:
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
        # A destruction hold (compliance/holds.py) on the document, its uploader or the tenant: 409 `held`.
        holds.ensure_not_held(s, tenant_id, what=f"document {document_id}", document_id=document_id,
                              user=doc.created_by)
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




def wait_for(tenant_id: uuid.UUID, ids: list[uuid.UUID], timeout_s: float | None = None,
             on_progress: Callable[..., object] | None = None, idle_timeout_s: float | None = None,
             poll_s: float = 1.0) -> dict[uuid.UUID, str]:
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
