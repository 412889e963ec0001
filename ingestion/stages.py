"""The ingestion pipeline stages that the Dagster assets wrap: raw, parse, classify, sanitise, chunk,
embed, index. Their products are kept per document *version* (content hash) in ingestion.store, so a
steward's approval run indexes exactly what was reviewed. The index write itself is retrieval.writer's."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from pathlib import Path

from sqlalchemy import func, select, update

from compliance import audit
from compliance.classification import CLASS_NAMES, classify
from compliance.pii import contains_pii, sanitise
from core.db.database import tenant_session
from core.embedding import Embedder
from core.enums import DocumentStatus, ReviewStatus
from core.models import Document
from core.settings import get_settings
from ingestion.chunking import ChunkDraft, chunk_elements
from ingestion.parsing import Element, ParsedDocument, parse
from ingestion.store import DocumentJob, Stages, claim, elements_from_json, elements_to_json, set_status
from retrieval import versions
from retrieval.writer import remove_chunks, write_index


class NotHeld(Exception):
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
        set_status(job, DocumentStatus.parsing)
    if not path.exists():
        raise FileNotFoundError(f"original file missing from the store ({path.name})")
    Stages.clear_document(job.id, keep=job.content_hash[:16])
    return {"bytes": path.stat().st_size}


def stage_parse(job: DocumentJob) -> ParsedDocument:
    data = read_original(job)
    s = get_settings()
    doc = parse(job.filename, data, ocr_max_pages=s.ocr_max_pages, ocr_timeout_s=s.ocr_timeout_s)
    Stages(job).write_json("parsed.json", {"format": doc.format, "pages": doc.pages, "ocr_pages": doc.ocr_pages,
                                           "title": doc.title(), "elements": elements_to_json(doc.elements)})
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
    els = elements_from_json(parsed["elements"])
    applied = cls >= 3 or sanitise_all
    title, counts = sanitise_elements(els, parsed["title"], applied)
    st.write_json("sanitised.json", {"applied": applied, "counts": counts, "title": title,
                                     "elements": elements_to_json(els)})
    return {"applied": applied, "counts": counts}


def active_build(tenant_id: uuid.UUID) -> versions.BuildConfig:
    """New documents are processed the way the tenant's serving index was built."""
    with tenant_session(tenant_id) as s:
        return versions.active(s).build


def stage_chunk(job: DocumentJob, build: versions.BuildConfig | None = None) -> list[ChunkDraft]:
    st = Stages(job)
    san = st.read_json("sanitised.json")
    build = build or active_build(job.tenant_id)
    chunks = chunk_elements(elements_from_json(san["elements"]), san["title"] or job.title, build.chunking)
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


def stage_embed(jobs: list[DocumentJob], embedder: Embedder | None = None) -> dict[str, int]:
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
            out.update(stage_embed(group, versions.BuildConfig(model, dim, 0, 0).embedder()))
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
        if decided and job.review_status == ReviewStatus.rejected:
            with tenant_session(job.tenant_id) as s:
                remove_chunks(s, job.tenant_id, job.id)
                s.execute(update(Document).where(Document.id == job.id).values(
                    status=DocumentStatus.rejected, status_reason="rejected by data steward", chunk_count=0,
                    indexed_hash=None,
                    updated_at=func.now()))
            Stages.clear_document(job.id)
            return DocumentStatus.rejected
        if not (decided and job.review_status == ReviewStatus.approved):
            set_status(job, DocumentStatus.awaiting_approval, f"Class {CLASS_NAMES[job.classification]}: waiting for "
                       "a data steward (Dagster job steward_review)", review_status=ReviewStatus.pending)
            return DocumentStatus.awaiting_approval
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
    if outcome == DocumentStatus.indexed:
        Stages.clear_document(job.id)
    return outcome


def _finished_elsewhere(job: DocumentJob) -> bool:
    with tenant_session(job.tenant_id) as s:
        row = s.execute(select(Document.content_hash, Document.indexed_hash, Document.status, Document.ingest_run_id)
                        .where(Document.id == job.id)).one_or_none()
    if row is None or row.content_hash != job.content_hash:
        return True
    if row.status == DocumentStatus.indexed and row.indexed_hash == job.content_hash:
        return True
    return (row.status == DocumentStatus.parsing and row.ingest_run_id is not None
            and row.ingest_run_id != job.claimed_by)
