"""The search index writer: a document's chunks, BM25 postings (impacts from retrieval.lexical, the
same formula search reads with), document frequencies and length statistics, per index generation.
Used by the ingestion stages, document deletion and index builds."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from compliance import audit
from compliance.classification import CLASS_NAMES
from core.db.database import tenant_session
from core.models import Chunk, Document, LexicalStats
from ingestion.chunking import ChunkDraft
from retrieval import versions
from retrieval.lexical import K1, B, term_frequencies


def _lock_stats(s: Session, tenant_id: uuid.UUID, generation: int) -> tuple[int, int]:
    """Lock the lexical statistics row of one index generation: its writers serialise here (so BM25
    statistics stay exact and term_stats upserts cannot deadlock)."""
    s.execute(pg_insert(LexicalStats).values(tenant_id=tenant_id, generation=generation, n_chunks=0, total_len=0)
              .on_conflict_do_nothing(index_elements=["tenant_id", "generation"]))
    row = s.execute(select(LexicalStats.n_chunks, LexicalStats.total_len)
                    .where(LexicalStats.tenant_id == tenant_id, LexicalStats.generation == generation)
                    .with_for_update()).one()
    return int(row[0]), int(row[1])


def remove_chunks(s: Session, tenant_id: uuid.UUID, document_id: uuid.UUID,
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


class IndexedDocument(Protocol):
    """The document version write_index indexes (ingestion's DocumentJob; the writer never imports ingestion)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    content_hash: str


@dataclass(frozen=True)
class IndexTarget:
    """What write_chunks needs to know about the document being written."""

    tenant_id: uuid.UUID
    document_id: uuid.UUID
    classification: int
    acl_groups: list[str]


def write_chunks(s: Session, target: IndexTarget, chunks: list[ChunkDraft], vectors: np.ndarray, model: str,
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
    rows: list[dict] = []
    postings: list[tuple[uuid.UUID, str, int, int, float]] = []
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


def write_index(job: IndexedDocument, chunks: list[ChunkDraft], vectors: np.ndarray, model: str) -> str:
    """Replace the document's chunks in the tenant's serving index generation, in one transaction:
    readers see the old chunks or the new ones, never a mix, and a failure leaves the old ones
    serving. Holds the tenant's shared index lock, so a promotion cannot flip the pointer meanwhile."""
    with tenant_session(job.tenant_id) as s:
        versions.lock_writes(s, job.tenant_id)
        ref = versions.active(s)
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
