"""Index versions: build a candidate next to the serving index, promote it with an atomic pointer
flip, or reject it; the serving version is never touched by a build.

- A *rebuild* (new embedding model, chunking change) re-processes every indexed document from its
  original bytes into a new chunk generation, with the build configuration the settings ask for.
- A *boosts* refresh is a version that shares the serving generation and carries a new boost set.
- At most one candidate per tenant is pending; a new rebuild supersedes a pending one.
- Promotion first catches the candidate up with documents indexed (or removed) since it was built,
  then, holding the tenant's exclusive index lock (document writers hold it shared), flips
  `active` → `retired` and `candidate` → `active` in one transaction. Generations no version needs
  any more (neither the active one nor the one it replaced) are dropped afterwards.
The golden-evaluation gate between build and promotion lives in evals/ (assets wire them up).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from compliance import audit
from core.db.database import system_session, tenant_session
from core.enums import DocumentStatus
from core.models import Document, IndexVersion
from core.settings import get_settings
from ingestion.chunking import chunk_elements
from ingestion.parsing import parse
from ingestion.stages import check_no_pii, embedding_text, sanitise_elements
from retrieval import versions as index_versions  # this module has its own versions() listing
from retrieval.versions import BuildConfig
from retrieval.writer import IndexTarget, remove_chunks, write_chunks


class BuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Candidate:
    tenant_id: uuid.UUID
    version: int
    generation: int
    kind: str
    config: dict[str, Any]


def tenants() -> list[tuple[uuid.UUID, str]]:
    with system_session() as s:
        return [(r[0], r[1]) for r in s.execute(text("SELECT id, name FROM tenants ORDER BY name")).all()]


def _ensure_active_row(s: Session, tenant_id: uuid.UUID) -> IndexVersion:
    row = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                               IndexVersion.status == "active")).scalar()
    if row is None:  # a tenant created before index versions existed, or by hand
        row = IndexVersion(tenant_id=tenant_id, version=1, chunk_generation=1, status="active", kind="initial",
                           reason="implicit first version", config={}, decided_at=dt.datetime.now(dt.UTC))
        s.add(row)
        s.flush()
    if not row.config:
        row.config = BuildConfig.desired().as_dict()
    return row


def pending(tenant_id: uuid.UUID) -> IndexVersion | None:
    with system_session() as s:
        row = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                                   IndexVersion.status.in_(("building", "candidate")))).scalar()
        if row is not None:
            s.expunge(row)
        return row


def last_rejected(tenant_id: uuid.UUID, kind: str) -> int | None:
    """The newest version of this kind the gate rejected, if it is newer than the active one."""
    with system_session() as s:
        return s.execute(text(
            "SELECT max(version) FROM index_versions WHERE tenant_id = :t AND kind = :k AND status = 'rejected' "
            "AND version > (SELECT coalesce(max(version), 0) FROM index_versions WHERE tenant_id = :t "
            "AND status = 'active')"), {"t": tenant_id, "k": kind}).scalar()


def start(tenant_id: uuid.UUID, kind: str, reason: str, config: BuildConfig | None = None) -> Candidate | None:
    """Register a new version in `building`. A rebuild supersedes a pending candidate; a boosts
    refresh does not (it returns None: the pending rebuild will carry fresh boosts itself)."""
    if kind not in ("rebuild", "boosts"):
        raise ValueError(f"unknown index build kind {kind!r}")
    with system_session() as s:
        s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"eap-build:{tenant_id}"})
        act = _ensure_active_row(s, tenant_id)
        old = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                                   IndexVersion.status.in_(("building", "candidate")))).scalar()
        if old is not None:
            if kind == "boosts":
                return None
            old.status, old.decided_at, old.error = "superseded", dt.datetime.now(dt.UTC), "superseded by a rebuild"
            s.flush()
        top = s.execute(text("SELECT coalesce(max(version), 0), coalesce(max(chunk_generation), 0) "
                             "FROM index_versions WHERE tenant_id = :t"), {"t": tenant_id}).one()
        version = int(top[0]) + 1
        if kind == "rebuild":
            generation = int(top[1]) + 1
            cfg = (config or BuildConfig.desired()).as_dict()
        else:
            generation, cfg = act.chunk_generation, dict(act.config)
        s.add(IndexVersion(tenant_id=tenant_id, version=version, chunk_generation=generation, status="building",
                           kind=kind, reason=reason, config=cfg))
        audit.record(s, tenant_id=tenant_id, actor="pipeline", action="index.version.build",
                     resource_type="index_version", resource_id=str(version),
                     details={"kind": kind, "reason": reason, "generation": generation, "config": cfg,
                              "active_version": act.version})
    if old is not None:
        drop_unused_generations(tenant_id)
    return Candidate(tenant_id, version, generation, kind, cfg)


def _indexed_documents(tenant_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    with tenant_session(tenant_id) as s:
        rows = s.execute(select(Document.id, Document.indexed_hash, Document.filename, Document.title,
                                Document.storage_path, Document.classification, Document.acl_groups,
                                Document.index_version)
                         .where(Document.status == DocumentStatus.indexed)).all()
    return {str(r[0]): {"hash": r[1], "filename": r[2], "title": r[3], "path": r[4], "classification": r[5],
                        "acl": list(r[6]), "doc_version": r[7] or 1} for r in rows}


def _rebuild_documents(cand: Candidate, docs: dict[str, dict[str, Any]]) -> tuple[int, dict[str, str]]:
    """Process documents from their original bytes with the candidate's configuration and write
    them into its generation. Returns (chunks written, failures)."""
    build = BuildConfig.from_dict(cand.config)
    embedder = build.embedder()
    sanitise_all = get_settings().pii_sanitise_all
    written, failures = 0, {}
    for doc_id, d in docs.items():
        try:
            parsed = parse(d["filename"], Path(d["path"]).read_bytes())
            els = parsed.elements
            title, _ = sanitise_elements(els, parsed.title(), d["classification"] >= 3 or sanitise_all)
            chunks = chunk_elements(els, title or d["title"], build.chunking)
            if not chunks:
                raise BuildFailed("no chunks produced")
            check_no_pii(chunks, d["classification"])
            vectors = embedder.embed([embedding_text(c) for c in chunks])
            with tenant_session(cand.tenant_id) as s:
                current = s.execute(select(Document.indexed_hash).where(Document.id == uuid.UUID(doc_id))).scalar()
                if current != d["hash"]:
                    continue  # changed meanwhile: the catch-up before promotion handles it
                written += write_chunks(s, IndexTarget(cand.tenant_id, uuid.UUID(doc_id), d["classification"],
                                                       d["acl"]), chunks, vectors, embedder.name, cand.generation,
                                        d["doc_version"])
        except Exception as exc:  # noqa: BLE001 - collected: an incomplete candidate must not be promoted
            failures[doc_id] = f"{type(exc).__name__}: {exc}"[:300]
    return written, failures


def build_generation(cand: Candidate) -> dict[str, Any]:
    """Fill a rebuild candidate's generation with every indexed document of the tenant."""
    t0 = time.perf_counter()
    docs = _indexed_documents(cand.tenant_id)
    written, failures = _rebuild_documents(cand, docs)
    if failures:
        raise BuildFailed(f"{len(failures)} of {len(docs)} documents could not be rebuilt: "
                          + "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:5]))
    return {"documents": len(docs), "chunks": written, "seconds": round(time.perf_counter() - t0, 2),
            "manifest": {k: v["hash"] for k, v in docs.items()}}


def finish(cand: Candidate, stats: dict[str, Any]) -> None:
    manifest = stats.pop("manifest", None)
    with system_session() as s:
        row = s.get(IndexVersion, (cand.tenant_id, cand.version))
        if row is None or row.status != "building":
            raise BuildFailed(f"index version {cand.version} is {row.status if row else 'gone'}, not building")
        row.status, row.stats = "candidate", stats
        if manifest is not None:
            row.manifest = manifest


def fail(cand: Candidate, error: str) -> None:
    with system_session() as s:
        row = s.get(IndexVersion, (cand.tenant_id, cand.version))
        if row is not None and row.status in ("building", "candidate"):
            row.status, row.error, row.decided_at = "failed", error[:2000], dt.datetime.now(dt.UTC)
            audit.record(s, tenant_id=cand.tenant_id, actor="pipeline", action="index.version.failed",
                         resource_type="index_version", resource_id=str(cand.version), outcome="failure",
                         details={"error": error[:500]})
    drop_unused_generations(cand.tenant_id)


def record_evaluation(tenant_id: uuid.UUID, version: int, evaluation: dict[str, Any]) -> None:
    """Store the gate's verdict; a failed gate rejects the candidate (the active version keeps serving)."""
    with system_session() as s:
        row = s.get(IndexVersion, (tenant_id, version))
        if row is None:
            return
        row.evaluation = evaluation
        if not evaluation.get("passed") and row.status == "candidate":
            row.status, row.decided_at = "rejected", dt.datetime.now(dt.UTC)
            row.error = "golden evaluation regressed: " + "; ".join(
                f"{r['metric']} {r['active']:.3f} → {r['candidate']:.3f}" for r in evaluation.get("regressions", []))
        audit.record(s, tenant_id=tenant_id, actor="pipeline", action="index.version.evaluated",
                     resource_type="index_version", resource_id=str(version),
                     outcome="success" if evaluation.get("passed") else "failure",
                     details={k: evaluation.get(k) for k in ("passed", "gated", "regressions", "active_version")})
    if not evaluation.get("passed"):
        drop_unused_generations(tenant_id)


def _catch_up(cand: Candidate, manifest: dict[str, str]) -> dict[str, str]:
    """Bring the candidate's generation in line with what the serving index holds now."""
    if cand.kind != "rebuild":
        return manifest
    docs = _indexed_documents(cand.tenant_id)
    changed = {k: v for k, v in docs.items() if manifest.get(k) != v["hash"]}
    gone = [k for k in manifest if k not in docs]
    if gone:
        with tenant_session(cand.tenant_id) as s:
            for k in sorted(gone):
                remove_chunks(s, cand.tenant_id, uuid.UUID(k), cand.generation)
    if changed:
        _, failures = _rebuild_documents(cand, changed)
        if failures:
            raise BuildFailed(f"catch-up failed for {sorted(failures)[:5]}")
    return {k: v["hash"] for k, v in docs.items()}


def _documents_now(s: Session, tenant_id: uuid.UUID) -> dict[str, str | None]:
    return {str(r[0]): r[1] for r in s.execute(
        select(Document.id, Document.indexed_hash).where(Document.tenant_id == tenant_id,
                                                         Document.status == DocumentStatus.indexed)).all()}


def _switch(cand: Candidate, manifest: dict[str, str], from_status: str, action: str, attempts: int,
            own_generation: bool) -> dict[str, Any] | None:
    """Make `cand` the active version: catch its generation up with the documents (when it has a
    generation of its own), then flip the pointer in one transaction under the exclusive index lock.
    The version it replaces keeps, as its manifest, the documents its generation held at the flip."""
    tenant_id = cand.tenant_id
    for _attempt in range(attempts):
        if own_generation:
            manifest = _catch_up(cand, manifest)
        with system_session() as s:
            index_versions.lock_promotion(s, tenant_id)
            now_docs = _documents_now(s, tenant_id)
            if own_generation and now_docs != manifest:
                continue  # a document changed during the catch-up: catch up again
            row = s.get(IndexVersion, (tenant_id, cand.version), with_for_update=True)
            if row is None or row.status != from_status:
                return None
            old = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                                       IndexVersion.status == "active")).scalar()
            if not own_generation and old is not None and old.chunk_generation != cand.generation:
                row.status, row.error = "superseded", "the serving generation changed since this boost set was built"
                row.decided_at = dt.datetime.now(dt.UTC)
                return None
            now = dt.datetime.now(dt.UTC)
            if old is not None:
                old.status, old.decided_at, old.manifest = "retired", now, now_docs
                s.flush()  # the partial unique index allows one active version: retire first
            row.status, row.decided_at, row.manifest = "active", now, now_docs
            audit.record(s, tenant_id=tenant_id, actor="pipeline", action=action,
                         resource_type="index_version", resource_id=str(cand.version),
                         details={"from_version": old.version if old else None, "kind": cand.kind,
                                  "generation": cand.generation, "evaluation": (row.evaluation or {}).get(
                                      "candidate")})
            result = {"version": cand.version, "from_version": old.version if old else None,
                      "generation": cand.generation}
        drop_unused_generations(tenant_id)
        return result
    raise BuildFailed(f"index version {cand.version} could not be switched to: documents kept changing during "
                      f"{attempts} catch-up attempts")


def promote(tenant_id: uuid.UUID, attempts: int = 3) -> dict[str, Any] | None:
    """Promote the tenant's evaluated candidate (None if there is nothing to promote)."""
    with system_session() as s:
        row = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                                   IndexVersion.status == "candidate")).scalar()
        if row is None or not (row.evaluation or {}).get("passed"):
            return None
        cand = Candidate(tenant_id, row.version, row.chunk_generation, row.kind, dict(row.config))
        manifest = dict(row.manifest or {})
    return _switch(cand, manifest, "candidate", "index.version.promoted", attempts,
                   own_generation=cand.kind == "rebuild")


def rollback(tenant_id: uuid.UUID, attempts: int = 3) -> dict[str, Any]:
    """Serve the version the active one replaced again (its generation is kept for this), caught up
    with the documents indexed or removed since, in its own configuration. Not gated: it served
    before. A pending candidate is left alone (the gate compares it with whatever is active)."""
    with system_session() as s:
        act = _ensure_active_row(s, tenant_id)
        prev = s.execute(select(IndexVersion).where(IndexVersion.tenant_id == tenant_id,
                                                    IndexVersion.status == "retired")
                         .order_by(IndexVersion.decided_at.desc(), IndexVersion.version.desc()).limit(1)).scalar()
        if prev is None:
            raise BuildFailed("there is no earlier index version to roll back to")
        has_chunks = s.execute(text("SELECT 1 FROM lexical_stats WHERE tenant_id = :t AND generation = :g"),
                               {"t": tenant_id, "g": prev.chunk_generation}).first() is not None
        if prev.chunk_generation != act.chunk_generation and not has_chunks:
            raise BuildFailed(f"index version {prev.version} can no longer be restored (its chunks were dropped)")
        cand = Candidate(tenant_id, prev.version, prev.chunk_generation, "rebuild",
                         dict(prev.config) or BuildConfig.desired().as_dict())
        manifest = dict(prev.manifest or {})
        own = prev.chunk_generation != act.chunk_generation
    result = _switch(cand, manifest, "retired", "index.version.rolled_back", attempts, own_generation=own)
    if result is None:
        raise BuildFailed(f"index version {cand.version} changed state during the rollback")
    return result


def drop_unused_generations(tenant_id: uuid.UUID) -> int:
    """Delete chunk generations that neither the active version, the version it replaced (kept for
    in-flight queries and rollback) nor a pending candidate uses."""
    with system_session() as s:
        keep = set(s.execute(text(
            "SELECT chunk_generation FROM index_versions WHERE tenant_id = :t AND (status IN "
            "('active','building','candidate') OR version = (SELECT max(version) FROM index_versions "
            "WHERE tenant_id = :t AND status = 'retired'))"), {"t": tenant_id}).scalars().all()) or {1}
        gens = set(s.execute(text("SELECT DISTINCT generation FROM lexical_stats WHERE tenant_id = :t"),
                             {"t": tenant_id}).scalars().all())
        drop = sorted(gens - keep)
        for g in drop:
            params = {"t": tenant_id, "g": g}
            s.execute(text("DELETE FROM chunks WHERE tenant_id = :t AND generation = :g"), params)
            s.execute(text("DELETE FROM term_stats WHERE tenant_id = :t AND generation = :g"), params)
            s.execute(text("DELETE FROM lexical_stats WHERE tenant_id = :t AND generation = :g"), params)
        return len(drop)


def versions(tenant_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
    with tenant_session(tenant_id) as s:
        rows = s.execute(select(IndexVersion).order_by(IndexVersion.version.desc()).limit(limit)).scalars().all()
        return [{"version": r.version, "status": r.status, "kind": r.kind, "reason": r.reason,
                 "generation": r.chunk_generation, "config": r.config, "stats": r.stats,
                 "evaluation": {k: v for k, v in (r.evaluation or {}).items() if k != "per_question"},
                 "error": r.error, "created_at": r.created_at.isoformat(),
                 "decided_at": r.decided_at.isoformat() if r.decided_at else None} for r in rows]
