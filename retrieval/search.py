"""Hybrid search.

- dense: cosine distance on the per-dimension HNSW index, with pgvector 0.8 iterative scans so a
  selective tenant/ACL/metadata filter still yields k rows (HNSW filters *after* the scan);
- lexical: exact BM25 (k1=1.2, b=0.75, Lucene IDF) over the postings written at index time;
- fusion: reciprocal-rank fusion (k=60). RRF needs no score calibration between cosine and BM25,
  which differ in scale per query and per corpus; a weighted sum would have to be re-tuned per tenant;
- optional cross-encoder re-ranking (FlagEmbedding `FlagReranker`) when `EAP_RERANKER_MODEL_PATH`
  is set; the response says which path ran.
Access control (role ceiling, need-to-know ACL) is a predicate of both SQL queries; the tenant is
enforced by row-level security on every table touched.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.access import ceiling
from core.settings import get_settings
from retrieval import versions
from retrieval.lexical import K1, B, tokenize
from retrieval.versions import IndexRef

RRF_K = 60
CANDIDATES = 50
EF_SEARCH = 200
# BM25 candidates per query term, best impact first (see lexical()).
POSTINGS_PER_TERM = 2000


@dataclass
class Filters:
    document_ids: list[uuid.UUID] | None = None
    formats: Sequence[str] | None = None  # txt | md | html | docx | pdf | image
    section: str | None = None  # case-insensitive substring of the section path
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    max_classification: int | None = None


@dataclass
class Caller:
    role: str
    groups: tuple[str, ...] = ()


@dataclass
class Hit:
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    text: str
    page: int | None
    section: str | None
    classification: int
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None
    dense_similarity: float | None = None
    bm25: float | None = None
    rerank_score: float | None = None


@dataclass
class SearchResult:
    hits: list[Hit]
    fusion: str = "rrf"
    reranker: str | None = None
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    index_version: int | None = None  # the index version that answered


def _where(caller: Caller, filters: Filters, params: dict, generation: int) -> str:
    """Generation + access + metadata predicate on `c` (chunks). Values are bound, never interpolated."""
    top = ceiling(caller.role)
    if filters.max_classification is not None:
        top = min(top, filters.max_classification)
    params["ceiling"] = top
    params["groups"] = list(caller.groups)
    params["gen"] = generation
    parts = ["c.generation = :gen", "c.classification <= :ceiling",
             "(c.classification < 3 OR c.acl_groups && CAST(:groups AS text[]))"]
    if filters.document_ids:
        params["doc_ids"] = [str(d) for d in filters.document_ids]
        parts.append("c.document_id = ANY(CAST(:doc_ids AS uuid[]))")
    if filters.section:
        escaped = filters.section.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["section"] = "%" + escaped + "%"
        parts.append("c.section ILIKE :section")
    doc_parts = []
    if filters.formats:
        params["formats"] = list(filters.formats)
        doc_parts.append("d.format = ANY(CAST(:formats AS text[]))")
    if filters.created_after:
        params["after"] = filters.created_after
        doc_parts.append("d.created_at >= :after")
    if filters.created_before:
        params["before"] = filters.created_before
        doc_parts.append("d.created_at < :before")
    if doc_parts:
        parts.append("c.document_id IN (SELECT d.id FROM documents d WHERE " + " AND ".join(doc_parts) + ")")
    return " AND ".join(parts)


def dense(session: Session, caller: Caller, vector: np.ndarray, n: int, filters: Filters,
          generation: int = 1) -> list[tuple]:
    dim = int(vector.shape[0])
    params: dict = {"q": json.dumps([float(x) for x in vector]), "n": n, "dim": dim}
    where = _where(caller, filters, params, generation)
    # Iterative scan: keep walking the HNSW graph until n rows pass the filters (pgvector 0.8).
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    session.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, n)}"))
    sql = (
        f"SELECT c.id, c.embedding::vector({dim}) <=> CAST(:q AS vector({dim})) AS dist FROM chunks c "
        f"WHERE c.embedding_dim = :dim AND {where} "
        f"ORDER BY c.embedding::vector({dim}) <=> CAST(:q AS vector({dim})) LIMIT :n"
    )
    rows = session.execute(text(sql), params).all()
    # relaxed_order may return slightly out-of-order rows: order exactly on the returned set.
    return sorted(((r[0], 1.0 - float(r[1])) for r in rows), key=lambda x: -x[1])


def _has_metadata_filters(f: Filters) -> bool:
    return bool(f.document_ids or f.formats or f.section or f.created_after or f.created_before)


def lexical(session: Session, caller: Caller, query: str, n: int, filters: Filters,
            generation: int = 1) -> list[tuple]:
    """BM25 over the postings. Without metadata filters each query term contributes its
    POSTINGS_PER_TERM highest-impact readable postings, read in order from one index (no join): exact
    BM25 whenever a term has fewer readable postings than that, and otherwise only the weakest
    postings of very common (low-IDF) terms are left out. With metadata filters the candidate set is
    exact (postings joined to the filtered chunks)."""
    qtf = Counter(tokenize(query))
    if not qtf:
        return []
    top = ceiling(caller.role)
    if filters.max_classification is not None:
        top = min(top, filters.max_classification)
    params: dict = {"terms": list(qtf), "qtfs": list(qtf.values()), "n": n, "k1": K1, "b": B, "ceiling": top,
                    "groups": list(caller.groups), "m": POSTINGS_PER_TERM, "gen": generation}
    score = ("sum(cand.qtf * ln(1 + (st.n - df.df + 0.5) / (df.df + 0.5)) * cand.tf * (:k1 + 1) "
             "/ (cand.tf + :k1 * (1 - :b + :b * cand.len / greatest(st.avgdl, 1))))")
    head = """
        WITH q AS (SELECT * FROM unnest(CAST(:terms AS text[]), CAST(:qtfs AS int[])) AS q(term, qtf)),
        st AS (SELECT n_chunks::float8 AS n, total_len::float8 / greatest(n_chunks, 1) AS avgdl FROM lexical_stats
               WHERE generation = :gen),
        df AS (SELECT term, df::float8 AS df FROM term_stats WHERE generation = :gen
               AND term = ANY(CAST(:terms AS text[]))),
    """
    access = ("ct.classification <= :ceiling AND (ct.classification < 3 OR ct.acl_groups && CAST(:groups AS text[]))")
    if not _has_metadata_filters(filters):
        cand = f"""
        cand AS (
            SELECT q.term, q.qtf, p.chunk_id, p.tf, p.lexical_len AS len FROM q CROSS JOIN LATERAL (
                SELECT ct.chunk_id, ct.tf, ct.lexical_len FROM chunk_terms ct
                WHERE ct.tenant_id = eap_current_tenant() AND ct.generation = :gen AND ct.term = q.term AND {access}
                ORDER BY ct.impact DESC LIMIT :m) p)
        """
    else:
        where = _where(caller, filters, params, generation)
        cand = f"""
        cand AS (
            SELECT q.term, q.qtf, ct.chunk_id, ct.tf, ct.lexical_len AS len FROM q
            JOIN chunk_terms ct ON ct.term = q.term AND ct.generation = :gen
            JOIN chunks c ON c.id = ct.chunk_id
            WHERE {access} AND {where})
        """
    sql = head + cand + f"""
        SELECT cand.chunk_id, {score} AS score
        FROM cand JOIN df ON df.term = cand.term CROSS JOIN st
        GROUP BY cand.chunk_id
        ORDER BY score DESC, cand.chunk_id
        LIMIT :n
    """
    return [(r[0], float(r[1])) for r in session.execute(text(sql), params).all()]


def rrf(rankings: list[list[tuple]], k: int = RRF_K) -> dict[uuid.UUID, float]:
    scores: dict[uuid.UUID, float] = {}
    for ranking in rankings:
        for rank, (cid, _) in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    return scores


@functools.lru_cache(maxsize=2)
def _reranker(path: str) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(path, use_fp16=False, devices="cpu")


def search(session: Session, caller: Caller, query: str, k: int = 8, filters: Filters | None = None,
           candidates: int = CANDIDATES) -> SearchResult:
    filters = filters or Filters()
    n = max(candidates, k)
    timings: dict[str, float] = {}
    ref: IndexRef = versions.serving(session)
    t = time.perf_counter()
    vec = ref.build.embedder().embed([query])[0]
    timings["embed"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    d = dense(session, caller, vec, n, filters, ref.generation)
    timings["dense"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    lx = lexical(session, caller, query, n, filters, ref.generation)
    timings["lexical"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    fused = rrf([d, lx])
    order = sorted(fused, key=lambda cid: (-fused[cid], str(cid)))
    if not order:
        return SearchResult([], notes=["no readable chunk matched"], timings_ms=timings, index_version=ref.version)
    rows = session.execute(
        text("SELECT c.id, c.document_id, d.title, c.text, c.page, c.section, c.classification, c.content_hash "
             "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": [str(c) for c in order]},
    ).all()
    by_id = {r[0]: r for r in rows}
    # Feedback-weighted boosts of this index version (quality loop): a chunk's own boost (by its
    # content within the document, so boosts survive rebuilds), else its document's, else 1.
    boosts = {(kind, doc, h): b for kind, doc, h, b in session.execute(
        text("SELECT kind, document_id, content_hash, boost FROM source_boosts WHERE index_version = :v "
             "AND document_id = ANY(CAST(:d AS uuid[]))"),
        {"v": ref.version, "d": list({str(r[1]) for r in rows})}).all()}
    d_rank = {cid: (i + 1, s) for i, (cid, s) in enumerate(d)}
    l_rank = {cid: (i + 1, s) for i, (cid, s) in enumerate(lx)}
    hits = []
    boosted = 0
    for cid in order:
        r = by_id.get(cid)
        if r is None:
            continue
        factor = boosts.get(("chunk", r[1], r[7])) or boosts.get(("document", r[1], "")) or 1.0
        boosted += factor != 1.0
        hits.append(Hit(chunk_id=cid, document_id=r[1], title=r[2], text=r[3], page=r[4], section=r[5],
                        classification=r[6], score=fused[cid] * factor,
                        dense_rank=d_rank.get(cid, (None, None))[0], dense_similarity=d_rank.get(cid, (None, None))[1],
                        lexical_rank=l_rank.get(cid, (None, None))[0], bm25=l_rank.get(cid, (None, None))[1]))
    hits.sort(key=lambda h: (-h.score, str(h.chunk_id)))
    hits = hits[: max(k, candidates if _rerank_path() else k)]
    timings["fuse_fetch"] = (time.perf_counter() - t) * 1000
    result = SearchResult(hits, timings_ms=timings, index_version=ref.version)
    if boosted:
        result.notes.append(f"feedback boosts applied to {boosted} candidate chunks")
    path = _rerank_path()
    if path:
        scores = _reranker(path).compute_score([[query, h.text] for h in hits])
        scores = [scores] if isinstance(scores, float) else list(scores)
        for h, s in zip(hits, scores, strict=True):
            h.rerank_score = float(s)
        hits.sort(key=lambda h: -(h.rerank_score or 0.0))
        result.reranker = path
        timings["rerank"] = (time.perf_counter() - t) * 1000 - timings["fuse_fetch"]
    else:
        result.notes.append("no cross-encoder configured (EAP_RERANKER_MODEL_PATH): reciprocal-rank fusion only")
    result.hits = hits[:k]
    return result


def _rerank_path() -> str | None:
    return get_settings().reranker_model_path



