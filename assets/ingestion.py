"""Document ingestion as Dagster assets, one dynamic partition per document:

    document_raw → document_parsed → document_classified → document_sanitised
        → document_chunks → document_embeddings → search_index (gated for Class III/IV)

Runs cover a range of partitions (single-run backfill policy) so a batch of uploads is one run.
Each asset handles documents one by one: a document that fails is marked `failed` with its reason
and the others in the run carry on. The gate: `search_index` leaves Class III/IV documents
`awaiting_approval`; a data steward obtains a single-use approval token from the platform API and
launches the `steward_review` job with run config {decision, reason, approval_token}.
"""


import contextlib
import enum
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from assets.resources import EmbedderResource, PlatformDatabase
from core.embedding import ServiceEmbedder
from core.settings import get_settings
from ingestion import stages, store

# BackfillPolicy is marked beta, but single-run backfills are what makes a batch of uploads one run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

documents_partitions = dg.DynamicPartitionsDefinition(name="documents")
GROUP = "ingestion"


def _document_asset(description: str, deps: list[dg.AssetsDefinition] | None = None
                    ) -> Callable[[Callable[..., dg.MaterializeResult[Any]]], dg.AssetsDefinition]:
    """One asset of the pipeline: partitioned by document, a range of partitions is one run."""
    return dg.asset(partitions_def=documents_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
                    group_name=GROUP, deps=deps, description=description)


_SKIP_STATUSES = {"failed", "rejected"}


# Launched by the intake sensor (the tag names the request): such a run takes only queued documents.
REQUEST_TAG = "eap/request"


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Stage products carry unsanitised text: whatever a stage writes is owner-only (restored after,
    since an in-process run shares the caller's process)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _run_stage(
    context: dg.AssetExecutionContext, stage: str, fn: Callable[[store.DocumentJob], object], needs: str | None
) -> tuple[dict[str, Any], list[store.DocumentJob]]:
    keys = list(context.partition_keys)
    jobs = store.load_jobs(keys, run_id=context.run_id)
    ok, failed, skipped = [], {}, []
    t0 = time.perf_counter()
    with _private_umask(), store.Heartbeat(context.run_id):
        for key in keys:
            job = jobs.get(key)
            if job is None or job.status in _SKIP_STATUSES or (
                needs and (not job.held or not store.Stages(job).has(needs))
            ):
                skipped.append(key)
                continue
            try:
                fn(job)
                ok.append(job)
            except stages.NotHeld as exc:
                skipped.append(key)
                context.log.info(f"document {key} skipped at {stage}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one bad document must not stop the others
                store.mark_failed(job, stage, exc)
                # The full reason is on the document (GET /v1/documents/{id}); it can quote document text
                # (a parser's or the database's message), so the UI gets the stage and error class only.
                failed[key] = f"{stage}: {type(exc).__name__}"
                context.add_asset_metadata({"failure": failed[key]}, partition_key=key)
                context.log.warning(f"document {key} failed at {stage}: {failed[key]}")
    meta: dict[str, Any] = {
        "documents": len(keys),
        "succeeded": len(ok),
        "failed": len(failed),
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return meta, ok


@_document_asset(description="Original bytes from the content-addressed store, checked against their hash.")
def document_raw(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    only_queued = REQUEST_TAG in context.run.tags

    def raw(job: store.DocumentJob) -> object:
        return stages.stage_raw(job, context.run_id, only_queued=only_queued)

    meta, ok = _run_stage(context, "raw", raw, needs=None)
    return dg.MaterializeResult(metadata=meta)


@_document_asset(deps=[document_raw],
          description="Structured elements (titles, text, lists, tables) with pages and sections; OCR for scans.")
def document_parsed(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    stats = {"elements": 0, "ocr_pages": 0}

    def parse(job: store.DocumentJob) -> None:
        doc = stages.stage_parse(job)
        stats["elements"] += len(doc.elements)
        stats["ocr_pages"] += len(doc.ocr_pages)

    meta, _ = _run_stage(context, "parse", parse, needs=None)
    return dg.MaterializeResult(metadata={**meta, **stats, "ocr_engine": "tesseract"})


@_document_asset(deps=[document_parsed],
          description="Class I–IV: declared label checked by marker, export-control and PII-density detectors.")
def document_classified(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    raised = 0

    def run(job: store.DocumentJob) -> None:
        nonlocal raised
        res = stages.stage_classify(job)
        if res["final"] > res["declared"]:
            raised += 1
            context.add_asset_metadata({"class_raised": f"{res['declared']}→{res['final']}"},
                                       partition_key=str(job.id))

    meta, _ = _run_stage(context, "classify", run, needs="parsed.json")
    return dg.MaterializeResult(metadata={**meta, "raised": raised})


@_document_asset(deps=[document_classified],
          description="PII replaced by typed placeholders (mandatory for Class III/IV).")
def document_sanitised(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    totals: dict[str, int] = {}
    sanitise_all = get_settings().pii_sanitise_all

    def run(job: store.DocumentJob) -> None:
        res = stages.stage_sanitise(job, sanitise_all)
        for k, v in res["counts"].items():
            totals[k] = totals.get(k, 0) + v

    meta, _ = _run_stage(context, "sanitise", run, needs="classified.json")
    return dg.MaterializeResult(metadata={**meta, "pii_replaced": dg.MetadataValue.json(totals)})


@_document_asset(deps=[document_sanitised],
          description="Structure-aware chunks (~220 word pieces, overlap) with page, section and hash.")
def document_chunks(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    n = {"chunks": 0}

    def run(job: store.DocumentJob) -> None:
        n["chunks"] += len(stages.stage_chunk(job))

    meta, _ = _run_stage(context, "chunk", run, needs="sanitised.json")
    return dg.MaterializeResult(metadata={**meta, **n})


@_document_asset(deps=[document_chunks], description="Chunk embeddings through the embedding seam.")
def document_embeddings(context: dg.AssetExecutionContext, db: PlatformDatabase,
                        embedder: EmbedderResource) -> dg.MaterializeResult[Any]:
    keys = list(context.partition_keys)
    jobs = [j for j in store.load_jobs(keys, run_id=context.run_id).values()
            if j.status not in _SKIP_STATUSES and j.held and store.Stages(j).has("chunks.json")]
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    with _private_umask(), store.Heartbeat(context.run_id):
        model = embedder.get()  # loading the model counts as work: the heartbeat runs meanwhile
        t_load = time.perf_counter()
        with store.embedding_slot() as waited:  # one run embeds at a time on this host (see embedding_slot)
            t_embed = time.perf_counter()
            try:
                counts = stages.stage_embed(jobs, model)
            except Exception:  # noqa: BLE001 - retry per document so one bad input does not sink the batch
                for job in jobs:
                    try:
                        counts.update(stages.stage_embed([job], model))
                    except Exception as exc:  # noqa: BLE001
                        store.mark_failed(job, "embed", exc)
                        context.log.warning(f"document {job.id} failed at embed: {type(exc).__name__}")
    secs, embed_secs = time.perf_counter() - t0, time.perf_counter() - t_embed
    total = sum(counts.values())
    # `seconds` is the step; `model_load_seconds` (once per run), `embedding_slot_wait_seconds` (another run was
    # embedding) and `embed_seconds` split it, so a benchmark can tell a run's fixed cost from the embedding rate.
    return dg.MaterializeResult(metadata={
        "documents": len(keys), "embedded_documents": len(counts), "chunks": total,
        "model": model.name, "dimension": model.dim, "seconds": round(secs, 3),
        "model_load_seconds": round(t_load - t0, 3), "embed_seconds": round(embed_secs, 3),
        "embedding_slot_wait_seconds": round(waited, 3),
        "chunks_per_second": round(total / embed_secs, 1) if embed_secs > 0 else 0.0,
        # Through `eap up`'s long-lived embedding process (eap/embedding_service.py), or in this run's process;
        # fallbacks: calls done here because the service could not be reached.
        "embedding_service": isinstance(model, ServiceEmbedder),
        "embedding_fallbacks": getattr(model, "fallbacks", 0),
    })


class Decision(enum.Enum):
    approve = "approve"
    reject = "reject"


class ClassName(enum.Enum):
    I = "I"  # noqa: E741 - the class's name
    II = "II"
    III = "III"
    IV = "IV"


class IndexConfig(dg.Config):
    """Leave empty for pipeline runs. A data steward's review (job `steward_review`, one partition) sets
    all three, as returned by `POST /v1/documents/{id}/review-token`: the run verifies the token
    (signature, expiry, this document version, this decision and reason, never used) and records the
    token's authenticated user as the steward."""

    decision: Decision | None = Field(default=None, description="approve | reject (as in the approval token)")
    reason: str | None = Field(default=None, description="why (as given when the token was issued; audited)")
    approval_token: str | None = Field(default=None, description="single-use token from the platform API: "
                                       "POST /v1/documents/{id}/review-token")
    classification: ClassName | None = Field(default=None, description="approve at this lower class (a detector's "
                                             "false raise; as in the approval token)")


def _review(context: dg.AssetExecutionContext, config: IndexConfig, key: str) -> str:
    """A steward's decision on one document: verified and recorded (consuming the token) before anything
    is indexed or removed; any doubt fails the run and changes nothing."""
    from compliance import approvals
    from compliance.classification import CLASS_NAMES

    if config.decision is None or not (config.reason or "").strip() or not (config.approval_token or "").strip():
        raise dg.Failure("a steward review needs decision (approve|reject), reason and approval_token "
                         "(POST /v1/documents/{id}/review-token)")
    job = store.load_jobs([key]).get(key)
    if job is None:
        raise dg.Failure(f"document {key} does not exist")
    if not job.gated:
        raise dg.Failure(f"document {key} is Class {CLASS_NAMES[job.classification]}: no review needed")
    if job.status != "awaiting_approval":
        raise dg.Failure(f"document {key} is {job.status}, not awaiting approval")
    decision = config.decision.value
    lower_to = {"I": 1, "II": 2, "III": 3, "IV": 4}[config.classification.value] if config.classification else None
    if decision == "approve" and not store.Stages(job).has("embeddings.npy"):
        raise dg.Failure(f"document {key} has no processed version waiting for review")
    try:
        approval = approvals.consume_review(
            config.approval_token or "", tenant_id=job.tenant_id, document_id=job.id, content_hash=job.content_hash,
            decision=decision, reason=config.reason or "", run_id=context.run_id,
            class_name=CLASS_NAMES[job.classification], classification=lower_to)
    except approvals.ApprovalRefused as exc:
        raise dg.Failure(f"review of {key} refused: {exc.message}") from None
    if lower_to is not None:
        context.log.info(f"document {key}: class lowered from {CLASS_NAMES[job.classification]} to "
                         f"{CLASS_NAMES[lower_to]} by {approval.subject}")
        job.classification = lower_to
    job.review_status = "approved" if decision == "approve" else "rejected"
    job.reviewed_hash = job.content_hash
    context.log.info(f"document {key}: {job.review_status} by {approval.subject} (approval {approval.id})")
    try:
        return stages.stage_index(job)
    except Exception as exc:  # noqa: BLE001 - the decision stands; the document is retried by the pipeline
        raise dg.Failure(f"document {key} {job.review_status}, but indexing failed ({type(exc).__name__}); "
                         "the next pipeline run indexes it") from None


@_document_asset(deps=[document_embeddings],
          description="Chunks written atomically to pgvector HNSW + BM25 postings; Class III/IV wait for a "
                      "steward.")
def search_index(context: dg.AssetExecutionContext, config: IndexConfig,
                 db: PlatformDatabase) -> dg.MaterializeResult[Any]:
    keys = list(context.partition_keys)
    t0 = time.perf_counter()
    reviewing = (config.decision is not None or config.reason is not None or config.approval_token is not None
                 or config.classification is not None)
    if reviewing:
        if len(keys) != 1:
            raise dg.Failure("a steward review covers exactly one document: select one partition")
        outcome = _review(context, config, keys[0])
        # Ids, the decision and the approval only: the reason and the document's text stay out of the UI.
        return dg.MaterializeResult(metadata={
            "documents": 1, "seconds": round(time.perf_counter() - t0, 3), f"outcome_{outcome}": 1,
            "outcomes": dg.MetadataValue.json({keys[0]: outcome}),
            "review": dg.MetadataValue.json({"decision": config.decision.value if config.decision else None,
                                             "lowered_to": config.classification.value if config.classification
                                             else None}),
        })
    jobs = store.load_jobs(keys)
    outcomes: dict[str, str] = {}
    for key in keys:
        job = jobs.get(key)
        if job is None:
            outcomes[key] = "deleted"
            continue
        if job.status in _SKIP_STATUSES or not store.Stages(job).has("embeddings.npy"):
            outcomes[key] = f"skipped ({job.status})"
            continue
        try:
            outcomes[key] = str(stages.stage_index(job))  # a DocumentStatus (StrEnum) or a plain word
        except Exception as exc:  # noqa: BLE001
            store.mark_failed(job, "index", exc)
            # The reason (stored on the document) can quote text, e.g. a database error's parameters:
            # run metadata shown in the UI gets the error class only.
            outcomes[key] = f"failed: {type(exc).__name__}"
            context.log.warning(f"document {key} failed at index: {type(exc).__name__}")
    summary: dict[str, int] = {}
    for v in outcomes.values():
        summary[v.split(":")[0].split(" ")[0]] = summary.get(v.split(":")[0].split(" ")[0], 0) + 1
    for key, outcome in outcomes.items():
        context.add_asset_metadata({"outcome": outcome}, partition_key=key)
        if outcome == "awaiting_approval":
            context.log.info(f"document {key} awaits a data steward: ask the platform API for an approval token "
                             f"(POST /v1/documents/{key}/review-token) and launch job steward_review for it")
    return dg.MaterializeResult(metadata={
        "documents": len(keys), "seconds": round(time.perf_counter() - t0, 3),
        **{f"outcome_{k}": v for k, v in summary.items()},
    })


# --------------------------------------------------------------------------- checks


@dg.asset_check(asset=search_index, description="No empty chunk is serving.")
def chunks_have_text(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import count_empty_chunks

    n = count_empty_chunks()
    return dg.AssetCheckResult(passed=n == 0, metadata={"empty_chunks": n})


@dg.asset_check(asset=search_index, description="Every vector has the dimension its model declares.")
def embedding_dimension(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import embedding_dimension_problems

    bad, dims = embedding_dimension_problems()
    return dg.AssetCheckResult(passed=bad == 0, metadata={"mismatched": bad, "models": dg.MetadataValue.json(dims)})


@dg.asset_check(asset=search_index, description="No PII left in Class III/IV chunks.")
def no_pii_in_restricted_chunks(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import restricted_chunks_with_pii

    scanned, leaks = restricted_chunks_with_pii()
    return dg.AssetCheckResult(passed=not leaks, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"scanned": scanned, "chunks_with_pii": len(leaks),
                                         "chunk_ids": dg.MetadataValue.json(leaks[:20])})


@dg.asset_check(asset=search_index, description="No chunk without an indexed, non-rejected document.")
def no_orphan_chunks(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import orphan_chunks

    n = orphan_chunks()
    return dg.AssetCheckResult(passed=n == 0, metadata={"orphans": n})


def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[document_raw, document_parsed, document_classified, document_sanitised, document_chunks,
                document_embeddings, search_index],
        asset_checks=[chunks_have_text, embedding_dimension, no_pii_in_restricted_chunks, no_orphan_chunks])
