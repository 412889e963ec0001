"""Document ingestion as Dagster assets, one dynamic partition per document:

    document_raw → document_parsed → document_classified → document_sanitised
        → document_chunks → document_embeddings → search_index (gated for Class III/IV)

Runs cover a range of partitions (single-run backfill policy) so a batch of uploads is one run. The stages are
one step (op `search_index`, a multi-asset: each stage is still its own asset, with a materialization per
document) that works through the run's documents in slices of SLICE_DOCS: a thread prepares a slice (raw →
chunks) while the slices before it are embedded and indexed. With one step per stage, each stage went
through the whole batch before the next began: the embedding model waited for every run's slowest stage,
only a second concurrent run kept it busy, and no document was searchable before the whole run was.

Documents are handled one by one: a document that fails is marked `failed` with its reason (its partition's
materialization says at which stage) and the others in the run carry on. Per-document details sit on that
document's partition; the metadata every partition of a run shares holds counts only.

The gate: `search_index` leaves Class III/IV documents `awaiting_approval`; a data steward obtains a
single-use approval token from the platform API and launches the `steward_review` job (search_index alone,
one partition) with run config {decision, reason, approval_token}.
"""


import contextlib
import dataclasses
import enum
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import dagster as dg
from pydantic import Field

from assets.resources import EmbedderResource, PlatformDatabase
from core.embedding import Embedder, ServiceEmbedder
from core.settings import get_settings
from ingestion import stages, store

# BackfillPolicy is marked beta, but single-run backfills are what makes a batch of uploads one run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

documents_partitions = dg.DynamicPartitionsDefinition(name="documents")
GROUP = "ingestion"


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


@dataclasses.dataclass(frozen=True)
class _Stage:
    asset: str  # the asset this stage materializes
    name: str  # as in a failed document's reason ("parse: …")
    needs: str | None  # the stage product a document needs for it (made by this run or an earlier one)
    description: str


PREP_STAGES = (
    _Stage("document_raw", "raw", None, "Original bytes from the content-addressed store, checked against their "
           "hash."),
    _Stage("document_parsed", "parse", None, "Structured elements (titles, text, lists, tables) with pages and "
           "sections; OCR for scans."),
    _Stage("document_classified", "classify", "parsed.json", "Class I–IV: declared label checked by marker, "
           "export-control and PII-density detectors."),
    _Stage("document_sanitised", "sanitise", "classified.json", "PII replaced by typed placeholders (mandatory "
           "for Class III/IV)."),
    _Stage("document_chunks", "chunk", "sanitised.json", "Structure-aware chunks (~220 word pieces, overlap) "
           "with page, section and hash."),
)
EMBEDDINGS = "document_embeddings"
INDEX = "search_index"

# Documents per slice: a run prepares (raw → chunks) one slice while the previous slices are embedded, so the
# embedding model gets its first chunks about a second after the run starts instead of after every stage has
# gone through the whole batch, and is fed from then on.
SLICE_DOCS = 16
# Slices prepared ahead of the embedding (bounded: the preparation cannot run away with memory).
SLICES_AHEAD = 4
# Embedding requests in flight per run: while one request's last texts are computed and its vectors come
# back, the next one is already queued at the embedding service.
EMBED_CALLS = 2


class _Tally:
    """One stage's figures over a run (its materialization's metadata)."""

    def __init__(self) -> None:
        self.ok = self.failed = self.skipped = 0
        self.seconds = 0.0
        self.extra: dict[str, Any] = {}

    def add(self, key: str, n: int) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def metadata(self, documents: int) -> dict[str, Any]:
        extra = {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in self.extra.items()}
        return {"documents": documents, "succeeded": self.ok, "failed": self.failed, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), **extra}


class _BusyClock:
    """Wall time during which at least one call is in flight (calls overlap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.seconds = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self.seconds += time.perf_counter() - self._since


class _Processing:
    """One run of the pipelined step (op search_index): the selected stages over the run's documents, slice by
    slice."""

    def __init__(self, context: dg.AssetExecutionContext, prep: list[_Stage], embedder: Embedder | None,
                 index: bool) -> None:
        self.context = context
        self.run_id = context.run_id
        self.prep = prep
        self.embedder = embedder
        self.only_queued = REQUEST_TAG in context.run.tags
        self.sanitise_all = get_settings().pii_sanitise_all
        self.tallies = {s.asset: _Tally() for s in prep}
        # Figures each stage reports even when no document added to them.
        initial: dict[str, dict[str, Any]] = {"parse": {"elements": 0, "ocr_pages": 0, "ocr_engine": "tesseract"},
                                              "classify": {"raised": 0}, "sanitise": {"pii_replaced": {}},
                                              "chunk": {"chunks": 0}}
        for stage in prep:
            self.tallies[stage.asset].extra.update(initial.get(stage.name, {}))
        self.embed_tally = _Tally()
        self.index = index
        self.outcomes: dict[str, int] = {}
        self.index_seconds = 0.0
        self.clock = _BusyClock()
        self.slot_wait = 0.0
        self.chunks = 0
        # Per-document metadata and log lines are made in worker threads (note, log) and handed to Dagster by the
        # step's own thread (flush).
        self._lock = threading.Lock()
        self._partition_meta: list[tuple[str, str, dict[str, Any]]] = []
        self._logs: list[tuple[str, str]] = []

    def note(self, asset: str, key: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self._partition_meta.append((asset, key, meta))

    def log(self, level: str, message: str) -> None:
        with self._lock:
            self._logs.append((level, message))

    def flush(self) -> None:
        with self._lock:
            metas, logs = self._partition_meta, self._logs
            self._partition_meta, self._logs = [], []
        for asset, key, meta in metas:
            self.context.add_asset_metadata(meta, asset_key=asset, partition_key=key)
        for level, message in logs:
            getattr(self.context.log, level)(message)

    # ---------------------------------------------------------------------------------- preparation

    def _apply(self, stage: _Stage, job: store.DocumentJob) -> None:
        tally = self.tallies[stage.asset]
        if stage.name == "raw":
            stages.stage_raw(job, self.run_id, only_queued=self.only_queued)
        elif stage.name == "parse":
            doc = stages.stage_parse(job)
            tally.add("elements", len(doc.elements))
            tally.add("ocr_pages", len(doc.ocr_pages))
        elif stage.name == "classify":
            res = stages.stage_classify(job)
            if res["final"] > res["declared"]:
                tally.add("raised", 1)
                self.note(stage.asset, str(job.id), {"class_raised": f"{res['declared']}→{res['final']}"})
        elif stage.name == "sanitise":
            totals = tally.extra["pii_replaced"]
            for k, v in stages.stage_sanitise(job, self.sanitise_all)["counts"].items():
                totals[k] = totals.get(k, 0) + v
        elif stage.name == "chunk":
            tally.add("chunks", len(stages.stage_chunk(job)))

    def prepare(self, keys: list[str]) -> None:
        """The selected stages before the embedding, for one slice of documents, stage after stage. A document
        that fails is marked failed with its reason and the others go on; one that is not this run's (taken by
        another run, deleted, failed or rejected) is skipped."""
        for stage in self.prep:
            tally = self.tallies[stage.asset]
            jobs = store.load_jobs(keys, run_id=self.run_id)  # this stage sees what the previous one recorded
            for key in keys:
                job = jobs.get(key)
                if job is None or job.status in _SKIP_STATUSES or (
                    stage.needs and (not job.held or not store.Stages(job).has(stage.needs))
                ):
                    tally.skipped += 1
                    continue
                t0 = time.perf_counter()
                try:
                    self._apply(stage, job)
                    tally.ok += 1
                except stages.NotHeld as exc:
                    tally.skipped += 1
                    self.log("info", f"document {key} skipped at {stage.name}: {exc}")
                except Exception as exc:  # noqa: BLE001 - one bad document must not stop the others
                    store.mark_failed(job, stage.name, exc)
                    # The full reason is on the document (GET /v1/documents/{id}); it can quote document text
                    # (a parser's or the database's message), so the UI gets the stage and error class only.
                    failure = f"{stage.name}: {type(exc).__name__}"
                    tally.failed += 1
                    self.note(stage.asset, key, {"failure": failure})
                    self.log("warning", f"document {key} failed at {failure}")
                finally:
                    tally.seconds += time.perf_counter() - t0

    # -------------------------------------------------------------------------------------- embedding

    def embed(self, keys: list[str]) -> None:
        """Embed the chunks of one slice's documents in shared requests; when a request fails, each document
        is tried alone so one bad input does not sink the slice."""
        assert self.embedder is not None
        jobs = [j for j in store.load_jobs(keys, run_id=self.run_id).values()
                if j.status not in _SKIP_STATUSES and j.held and store.Stages(j).has("chunks.json")]
        with self._lock:
            self.embed_tally.skipped += len(keys) - len(jobs)
        if not jobs:
            return
        counts: dict[str, int] = {}
        with self.clock.running():
            # In this process (no embedding service): one run's forward passes at a time on this host.
            slot = contextlib.nullcontext(0.0) if isinstance(self.embedder, ServiceEmbedder) else store.embedding_slot()
            with slot as waited:
                try:
                    counts = stages.stage_embed(jobs, self.embedder)
                except Exception:  # noqa: BLE001 - retry per document
                    for job in jobs:
                        try:
                            counts.update(stages.stage_embed([job], self.embedder))
                        except Exception as exc:  # noqa: BLE001
                            store.mark_failed(job, "embed", exc)
                            with self._lock:
                                self.embed_tally.failed += 1
                            self.note(EMBEDDINGS, str(job.id), {"failure": f"embed: {type(exc).__name__}"})
                            self.log("warning", f"document {job.id} failed at embed: {type(exc).__name__}")
        with self._lock:
            self.slot_wait += waited
            self.embed_tally.ok += len(counts)
            self.chunks += sum(counts.values())

    # ---------------------------------------------------------------------------------------- indexing

    def index_slice(self, keys: list[str]) -> None:
        """Write one slice's documents into the search index (Class III/IV wait for a steward): a slice is
        searchable as soon as it is embedded, not when the whole run is."""
        t0 = time.perf_counter()
        jobs = store.load_jobs(keys)
        for key in keys:
            job = jobs.get(key)
            if job is None:
                outcome = "deleted"
            elif job.status in _SKIP_STATUSES or not store.Stages(job).has("embeddings.npy"):
                outcome = f"skipped ({job.status})"
            else:
                try:
                    outcome = str(stages.stage_index(job))  # a DocumentStatus (StrEnum) or a plain word
                except Exception as exc:  # noqa: BLE001
                    store.mark_failed(job, "index", exc)
                    # The reason (stored on the document) can quote text, e.g. a database error's parameters:
                    # run metadata shown in the UI gets the error class only.
                    outcome = f"failed: {type(exc).__name__}"
                    self.log("warning", f"document {key} failed at index: {type(exc).__name__}")
            self.note(INDEX, key, {"outcome": outcome})
            if outcome == "awaiting_approval":
                self.log("info", f"document {key} awaits a data steward: ask the platform API for an approval "
                                 f"token (POST /v1/documents/{key}/review-token) and launch job steward_review "
                                 "for it")
            word = outcome.split(":")[0].split(" ")[0]
            with self._lock:
                self.outcomes[word] = self.outcomes.get(word, 0) + 1
        with self._lock:
            self.index_seconds += time.perf_counter() - t0

    def embed_and_index(self, keys: list[str]) -> None:
        if self.embedder is not None:
            self.embed(keys)
        if self.index:
            self.index_slice(keys)

    # ------------------------------------------------------------------------------------------ run

    def run(self, keys: list[str]) -> None:
        slices = [keys[i : i + SLICE_DOCS] for i in range(0, len(keys), SLICE_DOCS)]
        if self.embedder is None or not self.prep:
            for part in slices:
                if self.prep:
                    self.prepare(part)
                self.embed_and_index(part)
                self.flush()
            return
        # Pipelined: a thread prepares slices into a bounded queue; the step's thread hands each prepared slice
        # to EMBED_CALLS workers that embed and index it. Stages of one document stay in order; slices overlap.
        ready: queue.Queue[list[str] | BaseException | None] = queue.Queue(maxsize=SLICES_AHEAD)

        def produce() -> None:
            try:
                for part in slices:
                    self.prepare(part)
                    ready.put(part)
                ready.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the step's thread, which raises it
                ready.put(exc)

        producer = threading.Thread(target=produce, name="eap-prepare", daemon=True)
        producer.start()
        with ThreadPoolExecutor(EMBED_CALLS, thread_name_prefix="eap-embed-call") as pool:
            pending: list[Future[None]] = []
            while True:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    break
                pending = _unfinished(pending)
                while len(pending) >= EMBED_CALLS:
                    wait(pending, return_when=FIRST_COMPLETED)
                    pending = _unfinished(pending)
                pending.append(pool.submit(self.embed_and_index, item))
                self.flush()
            for f in pending:
                f.result()
        producer.join()
        self.flush()


def _unfinished(futures: list[Future[None]]) -> list[Future[None]]:
    """The calls still running; a finished call that failed raises here (fails the step)."""
    for f in futures:
        if f.done():
            f.result()
    return [f for f in futures if not f.done()]


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


@dg.multi_asset(
    # The op keeps the name of the step a steward's review runs: its run config stays
    # ops.search_index.config (serving/routes/reviews.py hands it out with the approval token).
    name="search_index",
    specs=[dg.AssetSpec(s.asset, description=s.description, group_name=GROUP,
                        deps=[PREP_STAGES[i - 1].asset] if i else None)
           for i, s in enumerate(PREP_STAGES)]
    + [dg.AssetSpec(EMBEDDINGS, description="Chunk embeddings through the embedding seam.", group_name=GROUP,
                    deps=[PREP_STAGES[-1].asset]),
       dg.AssetSpec(INDEX, description="Chunks written atomically to pgvector HNSW + BM25 postings; Class III/IV "
                    "wait for a steward.", group_name=GROUP, deps=[EMBEDDINGS])],
    partitions_def=documents_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    description="The ingestion stages in one step, pipelined over slices of the run's documents; a steward's "
                "review (job steward_review) runs it for search_index alone.",
)
def document_pipeline(context: dg.AssetExecutionContext, config: IndexConfig, db: PlatformDatabase,
                      embedder: EmbedderResource) -> Iterator[dg.MaterializeResult[Any]]:
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    keys = list(context.partition_keys)
    t0 = time.perf_counter()
    reviewing = (config.decision is not None or config.reason is not None or config.approval_token is not None
                 or config.classification is not None)
    if reviewing:
        if selected != {INDEX}:
            raise dg.Failure("a steward review runs search_index alone (job steward_review)")
        if len(keys) != 1:
            raise dg.Failure("a steward review covers exactly one document: select one partition")
        outcome = _review(context, config, keys[0])
        # Ids, the decision and the approval only: the reason and the document's text stay out of the UI.
        yield dg.MaterializeResult(asset_key=INDEX, metadata={
            "documents": 1, "seconds": round(time.perf_counter() - t0, 3), f"outcome_{outcome}": 1,
            "outcome": str(outcome),
            "review": dg.MetadataValue.json({"decision": config.decision.value if config.decision else None,
                                             "lowered_to": config.classification.value if config.classification
                                             else None}),
        })
        return
    prep = [s for s in PREP_STAGES if s.asset in selected]
    with _private_umask(), store.Heartbeat(context.run_id):
        model = embedder.get() if EMBEDDINGS in selected else None  # a model load counts as work: heartbeat
        load_seconds = time.perf_counter() - t0
        work = _Processing(context, prep, model, index=INDEX in selected)
        work.run(keys)
    for stage in prep:
        yield dg.MaterializeResult(asset_key=stage.asset, metadata=work.tallies[stage.asset].metadata(len(keys)))
    if model is not None:
        secs, busy = time.perf_counter() - t0, work.clock.seconds
        # `seconds` is the step (its stages overlap: each prepared slice is embedded while the next is prepared);
        # `model_load_seconds` (once per run), `embedding_slot_wait_seconds` (another run was embedding in its own
        # process) and `embed_seconds` (wall time with an embedding request in flight) split it.
        yield dg.MaterializeResult(asset_key=EMBEDDINGS, metadata={
            "documents": len(keys), "embedded_documents": work.embed_tally.ok, "failed": work.embed_tally.failed,
            "chunks": work.chunks, "model": model.name, "dimension": model.dim, "seconds": round(secs, 3),
            "model_load_seconds": round(load_seconds, 3), "embed_seconds": round(busy, 3),
            "embedding_slot_wait_seconds": round(work.slot_wait, 3),
            "chunks_per_second": round(work.chunks / busy, 1) if busy > 0 else 0.0,
            # Through `eap up`'s long-lived embedding process (eap/embedding_service.py), or in this run's process;
            # fallbacks: calls done here because the service could not be reached.
            "embedding_service": isinstance(model, ServiceEmbedder),
            "embedding_fallbacks": getattr(model, "fallbacks", 0),
        })
    if INDEX in selected:
        yield dg.MaterializeResult(asset_key=INDEX, metadata={
            "documents": len(keys), "seconds": round(work.index_seconds, 3),
            **{f"outcome_{k}": v for k, v in sorted(work.outcomes.items())},
        })


# --------------------------------------------------------------------------- checks


@dg.asset_check(asset=INDEX, description="No empty chunk is serving.")
def chunks_have_text(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import count_empty_chunks

    n = count_empty_chunks()
    return dg.AssetCheckResult(passed=n == 0, metadata={"empty_chunks": n})


@dg.asset_check(asset=INDEX, description="Every vector has the dimension its model declares.")
def embedding_dimension(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import embedding_dimension_problems

    bad, dims = embedding_dimension_problems()
    return dg.AssetCheckResult(passed=bad == 0, metadata={"mismatched": bad, "models": dg.MetadataValue.json(dims)})


@dg.asset_check(asset=INDEX, description="No PII left in Class III/IV chunks.")
def no_pii_in_restricted_chunks(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import restricted_chunks_with_pii

    scanned, leaks = restricted_chunks_with_pii()
    return dg.AssetCheckResult(passed=not leaks, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"scanned": scanned, "chunks_with_pii": len(leaks),
                                         "chunk_ids": dg.MetadataValue.json(leaks[:20])})


@dg.asset_check(asset=INDEX, description="No chunk without an indexed, non-rejected document.")
def no_orphan_chunks(db: PlatformDatabase) -> dg.AssetCheckResult:
    from retrieval.checks import orphan_chunks

    n = orphan_chunks()
    return dg.AssetCheckResult(passed=n == 0, metadata={"orphans": n})


def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[document_pipeline],
        asset_checks=[chunks_have_text, embedding_dimension, no_pii_in_restricted_chunks, no_orphan_chunks])
