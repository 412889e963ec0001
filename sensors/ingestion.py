"""Ingestion sensors.

document_intake: finds queued documents, adds one dynamic partition per new document and launches
batched runs (one run per contiguous range of new partitions: up to `ingest_batch_size` small
documents each, more for a large backlog, up to `ingest_batch_max` (`_batch_size`); every document
of `ingest_large_bytes` or more in a run of its own, small batches first);
re-queued documents (a changed re-upload, a dead run's documents) get runs of their own.
The cursor remembers which document versions were requested, and by which request, so a tick never
requests one twice. Each tick first looks for documents whose run died (failed, canceled, unknown,
or its heartbeat stopped) and requeues them — after EAP_INGEST_MAX_ATTEMPTS they fail with the reason.

inbox: each tenant has EAP_HOME/inbox/<tenant>/; new or changed files are submitted through the
same code path as uploads. A sidecar `<file>.meta.json` may set classification, acl_groups, title.
Only regular, single-named files physically inside the tenant's folder are read (ingestion/
source_files.py): links and hard links are refused, moved to EAP_HOME/inbox/.refused/ and audited.
"""


import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import dagster as dg

from assets.ingestion import REQUEST_TAG, documents_partitions
from assets.resources import PlatformDatabase
from core.errors import PlatformError
from core.settings import get_settings
from evals import golden_sets
from ingestion import intake, recovery, source_files, submission
from jobs.ingestion import ingest_job

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
MAX_RUNTIME = "dagster/max_runtime"  # read by the daemon's run monitoring (dagster.yaml run_monitoring)
PRIORITY = "dagster/priority"  # read by the QueuedRunCoordinator: small batches first
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _split_by_size(docs: list[recovery.Pending], size: int, large_bytes: int,
                   batch_bytes: int) -> list[list[recovery.Pending]]:
    """Small documents (under `large_bytes`) in runs of equal size: at most `size` documents and `batch_bytes`
    together each, and when there is more than one run, a multiple of BACKLOG_RUNS of them (run pairs end
    together). Each large document gets a run of its own, after the small ones: one huge file cannot hold small
    ones back. The loop ends: at one document per run every run is under `large_bytes`."""
    small = [d for d in docs if d.size_bytes < large_bytes]
    batches: list[list[recovery.Pending]] = []
    runs = -(-len(small) // size)
    while small:
        per = -(-len(small) // runs)
        batches = [small[i : i + per] for i in range(0, len(small), per)]
        if all(sum(d.size_bytes for d in b) <= max(batch_bytes, large_bytes) for b in batches):
            break
        # Over the byte ceiling: more runs, still in whole pairs. Measured before: a pair of 396 manual pages cut by
        # bytes alone (5 MB then) into 365 + 31 left a 30-document run alone at the end.
        runs = -(-(runs + 1) // BACKLOG_RUNS) * BACKLOG_RUNS
    return batches + [[d] for d in docs if d.size_bytes >= large_bytes]


# While this many ingest runs wait for a slot (dagster.yaml max_concurrent_runs), new documents are not cut
# into runs yet: the next tick after a slot frees takes them all, in runs sized to the backlog.
QUEUED_RUNS_ENOUGH = 2

# The backlog is cut into a multiple of this many runs of equal size (dagster.yaml's max_concurrent_runs: both
# run slots busy). A run embeds its first documents about a second after it starts (assets/ingestion.py works in
# slices), so a large run no longer leaves the model idle while it parses; every extra run costs a process start
# and the imports (~7 s of CPU). Equal runs in pairs end together: measured on 1,000 documents (benchmarks/
# ingest.py, 2 cores), a backlog of 790 cut into 250 + 250 + 250 + 40 left the third 250-document run alone on
# the machine for its last 90 s. 3 concurrent runs instead of 2 (max_concurrent_runs 3) spent more CPU in run
# workers (163 s against 85 s for 400 documents) and embedded no faster.
BACKLOG_RUNS = 2


def _batch_size(backlog: int, base: int, largest: int) -> int:
    """Documents per run: a backlog of up to `ingest_batch_size` in one run (the first documents are indexed
    soon); a larger one in a multiple of BACKLOG_RUNS runs of equal size, as few as `ingest_batch_max` allows,
    because every run pays a process start and the imports before its first document."""
    if backlog <= base:
        return base
    runs = -(-backlog // max(base, largest))
    runs = -(-runs // BACKLOG_RUNS) * BACKLOG_RUNS
    return -(-backlog // runs)


def _contiguous(docs: list[recovery.Pending], order: dict[str, int], size: int,
                large_bytes: int) -> list[list[recovery.Pending]]:
    """Documents that already have partitions (requeued, changed): neighbours in partition order
    share a range run (the documents of a dead batch go back as one run); the rest run alone."""
    groups: list[list[recovery.Pending]] = []
    for d in sorted(docs, key=lambda x: order[x.id]):
        prev = groups[-1] if groups else None
        if (prev and order[d.id] == order[prev[-1].id] + 1 and len(prev) < size and d.size_bytes < large_bytes
                and prev[0].size_bytes < large_bytes
                and sum(x.size_bytes for x in prev) + d.size_bytes <= large_bytes):
            prev.append(d)
        else:
            groups.append([d])
    return groups


def _max_runtime(batch: list[recovery.Pending]) -> int:
    """A generous ceiling for one run from the per-document budgets; the daemon fails a STARTED run
    past it (a backstop: a dead worker is normally found sooner by its missing heartbeat)."""
    s = get_settings()
    per_doc = [(s.ocr_timeout_s if d.format in ("pdf", "image", None) else 60.0) + s.embed_max_chunks / 10
               for d in batch]
    return int(600 + sum(per_doc))


def _request_key(batch: list[recovery.Pending]) -> str:
    if len(batch) == 1:
        d = batch[0]
        return f"doc:{d.id}:{d.queueing}"
    digest = hashlib.sha256("|".join(f"{d.id}:{d.queueing}" for d in batch).encode()).hexdigest()
    return f"batch:{digest[:24]}"


def _run_request(batch: list[recovery.Pending], large_bytes: int) -> dg.RunRequest:
    key = _request_key(batch)
    tags = {REQUEST_TAG: key, MAX_RUNTIME: str(_max_runtime(batch)),
            PRIORITY: "-1" if batch[0].size_bytes >= large_bytes else "1" if len(batch) > 1 else "0"}
    if len(batch) == 1:
        return dg.RunRequest(run_key=key, partition_key=batch[0].id, tags=tags)
    return dg.RunRequest(run_key=key, tags={**tags, RANGE_START: batch[0].id, RANGE_END: batch[-1].id,
                                            "eap/documents": str(len(batch))})


ARRIVALS = "_arrivals"  # cursor entry: [new documents seen at the last tick, since when they have been held]
# While runs are in flight and new documents keep arriving (an upload or a copy into the inbox in progress), the
# backlog is cut once it stops growing, for at most this long: cut mid-upload, the last documents of a 1,000-page
# upload (55) waited for a run slot behind the runs cut before them and ran as a pair of their own at the end, 30 s
# of a half-idle machine (benchmarks/ingest.py). With no run in flight the first documents are cut at once.
ARRIVAL_HOLD_MAX_S = 30.0


def _load_cursor(raw: str | None) -> tuple[dict[str, list], list]:
    """(document id → [its queueing (Pending.queueing), request key, requested at (epoch s)], the arrivals
    entry [count, held since]). Older cursors held the content hash only: such entries are requested again (a run
    key never repeats)."""
    data = json.loads(raw) if raw else {}
    arrivals = data.pop(ARRIVALS, None)
    return ({d: (v if isinstance(v, list) else [v, None, 0.0]) for d, v in data.items()},
            arrivals if isinstance(arrivals, list) and len(arrivals) == 2 else [0, None])


def _arriving(todo: int, arrivals: list, in_flight: int, now: float) -> tuple[bool, list]:
    """Whether to hold the new documents one more tick (runs are in flight and more arrived since the last tick,
    held for less than ARRIVAL_HOLD_MAX_S), and the arrivals entry to keep."""
    seen, since = int(arrivals[0]), arrivals[1]
    if in_flight and todo > seen and (since is None or now - float(since) < ARRIVAL_HOLD_MAX_S):
        return True, [todo, since if since is not None else now]
    return False, [todo, None]


class _Runs:
    """Run records looked up once per tick (a batch's documents share one run)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._by_id: dict[str, dg.RunRecord | None] = {}
        self._by_key: dict[str, dg.RunRecord | None] = {}

    def by_id(self, run_id: str) -> dg.RunRecord | None:
        if run_id not in self._by_id:
            self._by_id[run_id] = self.instance.get_run_record_by_id(run_id)
        return self._by_id[run_id]

    def by_request(self, key: str) -> dg.RunRecord | None:
        if key not in self._by_key:
            found = self.instance.get_run_records(dg.RunsFilter(tags={REQUEST_TAG: key}), limit=1)
            self._by_key[key] = found[0] if found else None
        return self._by_key[key]

    def fail(self, record: dg.RunRecord, message: str) -> None:
        if record.dagster_run.status == dg.DagsterRunStatus.STARTED:
            self.instance.report_run_failed(record.dagster_run, message)
            self._by_id[record.dagster_run.run_id] = self.instance.get_run_record_by_id(record.dagster_run.run_id)


def _dead_run(runs: _Runs, doc: recovery.Pending, entry: list | None, now: float, stale_s: float) -> str | None:
    """Why the run responsible for this document can no longer finish it (None: it may still)."""
    if doc.status == "parsing":
        if not doc.run_id:
            return "its run is unknown"
        record = runs.by_id(doc.run_id)
        if record is None:
            return f"its run {doc.run_id[:8]} is unknown"
        status = record.dagster_run.status
        if status in _FINISHED:
            return f"run {doc.run_id[:8]} ended {status.value} before finishing it"
        beat = doc.heartbeat_at or doc.updated_at
        silent = now - beat.timestamp()
        if status == dg.DagsterRunStatus.STARTED and silent > stale_s:
            runs.fail(record, f"no heartbeat from the run worker for {silent:.0f} s (EAP_INGEST_STALE_S): it died; "
                              "its documents are requeued")
            return f"run {doc.run_id[:8]} stopped (no heartbeat for {silent:.0f} s)"
        return None
    if entry is None or entry[0] != doc.queueing or not entry[1]:
        return None  # not requested yet in this stay in the queue: requested below
    record = runs.by_request(entry[1])
    if record is None:
        return f"its run ({entry[1]}) was never created" if now - float(entry[2]) > stale_s else None
    status = record.dagster_run.status
    if status in _FINISHED:
        return f"run {record.dagster_run.run_id[:8]} ended {status.value} without taking it"
    started = record.start_time
    if status == dg.DagsterRunStatus.STARTED and started is not None and now - started > stale_s:
        return f"run {record.dagster_run.run_id[:8]} started {now - started:.0f} s ago and never took it"
    return None


@dg.sensor(job=ingest_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Queued documents → dynamic partitions → batched ingest runs; documents of dead runs "
                       "are requeued (bounded attempts, then failed with the reason).")
def document_intake(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
    settings = get_settings()
    requested, arrivals = _load_cursor(context.cursor)
    now = time.time()
    pending = recovery.pending_documents()
    recovered: dict[str, int] = {}
    runs_seen = _Runs(context.instance)
    for doc in pending:
        why = _dead_run(runs_seen, doc, requested.get(doc.id), now, settings.ingest_stale_s)
        if why is None:
            continue
        outcome = recovery.requeue(doc, why, settings.ingest_max_attempts)
        recovered[outcome] = recovered.get(outcome, 0) + 1
        requested.pop(doc.id, None)
        context.log.warning(f"document {doc.id}: {why} → {outcome}")
    if recovered:
        pending = recovery.pending_documents()
    queued = [d for d in pending if d.status == "queued"]
    queued_ids = {d.id for d in queued}
    # Forget versions that have left the queue (their run started): the cursor stays small.
    requested = {d: e for d, e in requested.items() if d in queued_ids}
    todo = [d for d in queued if requested.get(d.id, [None])[0] != d.queueing]
    note = ", ".join(f"{n} {k}" for k, n in sorted(recovered.items()))
    if not todo:
        return dg.SkipReason(f"no new documents ({len(queued)} queued, all already requested)"
                             + (f"; recovered from dead runs: {note}" if note else ""))
    waiting = context.instance.get_runs_count(dg.RunsFilter(
        job_name=ingest_job.name, statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]))
    if waiting >= QUEUED_RUNS_ENOUGH:
        # Runs already wait for a free slot: cutting the documents that keep arriving into more runs now would
        # only make them small. The tick after a slot frees sizes runs to the whole backlog (`_batch_size`).
        return dg.SensorResult(cursor=json.dumps({**requested, ARRIVALS: [len(todo), None]}), skip_reason=(
            f"{len(todo)} new documents wait: {waiting} ingest runs are still queued"
            + (f"; recovered from dead runs: {note}" if note else "")))
    in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=ingest_job.name, statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]))
    hold, arrivals = _arriving(len(todo), arrivals, in_flight, now)
    if hold:  # an upload in progress: one cut once it is complete rather than a pair now and stragglers later
        return dg.SensorResult(cursor=json.dumps({**requested, ARRIVALS: arrivals}), skip_reason=(
            f"{len(todo)} new documents, still arriving: cut into runs once they stop (at most "
            f"{ARRIVAL_HOLD_MAX_S:.0f} s) while {in_flight} ingest runs are in flight"
            + (f"; recovered from dead runs: {note}" if note else "")))
    order = {k: i for i, k in enumerate(context.instance.get_dynamic_partitions(str(documents_partitions.name)))}
    new = [d for d in todo if d.id not in order]
    again = [d for d in todo if d.id in order]
    large = settings.ingest_large_bytes
    batches = _split_by_size(new, _batch_size(len(new), settings.ingest_batch_size, settings.ingest_batch_max),
                             large, settings.ingest_batch_max_bytes)
    new = [d for b in batches for d in b]  # partitions are added in batch order: each batch is one range
    runs = []
    for batch in batches + _contiguous(again, order, settings.ingest_batch_size, large):
        rr = _run_request(batch, large)
        runs.append(rr)
        requested.update({d.id: [d.queueing, rr.tags[REQUEST_TAG], now] for d in batch})
    context.log.info(f"{len(todo)} documents → {len(runs)} runs ({len(new)} new partitions)"
                     + (f"; recovered from dead runs: {note}" if note else ""))
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[documents_partitions.build_add_request([d.id for d in new])] if new else [],
        cursor=json.dumps({**requested, ARRIVALS: [0, None]}),  # all cut: what arrives next is new again
    )


def _sidecar(root: Path, path: Path) -> dict:
    meta = path.with_name(path.name + ".meta.json")
    if not os.path.lexists(meta):
        return {}
    try:
        with source_files.open_inside(root, meta) as fh:
            data = json.loads(fh.read(1024 * 1024))
    except source_files.RefusedFile as exc:
        _move_aside(root, meta, exc.message)
        raise PlatformError(f"sidecar refused: {exc.message}", code="invalid_sidecar") from None
    except (OSError, ValueError) as exc:
        raise PlatformError(f"unreadable sidecar {meta.name}: {exc}", code="invalid_sidecar") from None
    if not isinstance(data, dict):
        raise PlatformError(f"sidecar {meta.name} must be a JSON object", code="invalid_sidecar")
    return data


REFUSED_DIR = ".refused"


def _move_aside(root: Path, path: Path, reason: str) -> Path | None:
    """Move a refused entry (the link itself, never its target) to EAP_HOME/inbox/.refused/<tenant>/
    with a note saying why: it leaves the inbox and is not looked at again."""
    rel = path.relative_to(root)
    dest_dir = root / REFUSED_DIR / rel.parts[0]
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = dest_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{'__'.join(rel.parts[1:] or rel.parts)}"
    try:
        os.rename(path, dest)  # rename moves the directory entry: a symlink stays a symlink, unread
    except OSError:
        return None
    note = dest.with_name(dest.name + ".reason.txt")
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{rel}: {reason}\n")
    return dest


def _refuse(context: dg.SensorEvaluationContext, root: Path, path: Path, reason: str,
            tenant_id: uuid.UUID | None) -> str:
    rel = str(path.relative_to(root))
    moved = _move_aside(root, path, reason)
    where = f"moved to {moved.relative_to(root)}" if moved else "left in place"
    context.log.warning(f"inbox entry {rel} refused ({where}): {reason}")
    if tenant_id is not None:
        source_files.record_refusal(tenant_id, rel, reason, actor="inbox")
    return f"{rel}: {reason}"


def _not_taken(context: dg.SensorEvaluationContext, root: Path, path: Path, tenant_id: uuid.UUID,
               exc: PlatformError | OSError, errors: list[str], present: set[str], what: str,
               *, with_details: bool = False) -> bool:
    """Record why the inbox file `path` was not taken. A refused file (outside the inbox, a link, ...) is moved
    aside and forgotten; an OS error (e.g. still being copied) is retried next tick; a platform error (bad content)
    is logged (with its details if `with_details`) and kept until the file changes.
    Returns True when the file's stamp should be remembered."""
    rel = str(path.relative_to(root))
    if isinstance(exc, source_files.RefusedFile):
        errors.append(_refuse(context, root, path, exc.message, tenant_id))
        present.discard(rel)
        return False
    if isinstance(exc, PlatformError):
        errors.append(f"{rel}: {exc.message}")
        context.log.warning(f"{what} {rel} refused: {exc.message}" + (f" {exc.details or ''}" if with_details else ""))
        return True
    errors.append(f"{rel}: {exc}")
    return False


@dg.sensor(minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Per-tenant inbox folders (EAP_HOME/inbox/<tenant>/) → document submissions. Only regular "
                       "files physically inside the folder are read; links are refused and moved aside.")
def inbox(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SkipReason:
    configured = get_settings().inbox_dir
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    if not configured.exists():
        return dg.SkipReason(f"inbox folder {configured} does not exist")
    root = Path(os.path.realpath(configured))  # the inbox itself may be placed anywhere; below it, no links
    tenants = intake.tenants_by_name()
    submitted, unchanged, golden, errors, present = 0, 0, 0, [], set()
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        tenant_dir = root / entry.name
        tenant_id = tenants.get(entry.name)
        if entry.is_symlink():
            errors.append(_refuse(context, root, tenant_dir, "tenant folder is a symbolic link (links are not "
                                  "followed)", tenant_id))
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        if tenant_id is None:
            errors.append(f"{entry.name}/: no such tenant")
            continue
        files, links = source_files.walk(tenant_dir)
        for link, reason in links:
            errors.append(_refuse(context, root, link, reason, tenant_id))
        bad_sidecars = {link for link, _ in links if link.name.endswith(".meta.json")}
        for path in files:
            if path.name.startswith(".") or path.name.endswith((".meta.json", ".tmp", ".part")):
                continue
            rel = str(path.relative_to(root))
            if path.with_name(path.name + ".meta.json") in bad_sidecars:
                # Its classification and ACL were in the refused sidecar: never ingest it with defaults.
                errors.append(_refuse(context, root, path, "its sidecar (.meta.json) was refused", tenant_id))
                continue
            try:
                st = os.lstat(path)
                side = path.with_name(path.name + ".meta.json")
                side_mtime = os.lstat(side).st_mtime_ns if os.path.lexists(side) else 0
            except OSError:
                continue  # gone meanwhile
            present.add(rel)
            stamp = f"{st.st_mtime_ns}:{st.st_size}:{side_mtime}"
            if seen.get(rel) == stamp:
                continue
            if path.parent == tenant_dir / "golden" and path.suffix.lower() == ".json":
                # A golden dataset for this tenant's evaluations, not a document (evals/golden_sets.py).
                try:
                    with source_files.open_inside(root, path) as fh:
                        raw = fh.read(golden_sets.MAX_BYTES + 1)
                    with db.tenant(tenant_id) as s:
                        golden_sets.store(s, tenant_id, golden_sets.parse(raw), actor="inbox", source="inbox:" + rel)
                    golden += 1
                except (PlatformError, OSError) as exc:
                    if not _not_taken(context, root, path, tenant_id, exc, errors, present, "golden dataset",
                                      with_details=True):
                        continue
                seen[rel] = stamp
                continue
            try:
                meta = _sidecar(root, path)
                with source_files.open_inside(root, path) as fh:
                    sub = submission.submit_document(
                        tenant_id, filename=path.name, stream=fh, classification=meta.get("classification"),
                        acl_groups=meta.get("acl_groups"), title=meta.get("title"), actor="inbox",
                        source="inbox", source_key="inbox:" + str(path.relative_to(tenant_dir)),
                    )
                submitted += 0 if sub.unchanged else 1
                unchanged += 1 if sub.unchanged else 0
            except (PlatformError, OSError) as exc:
                if not _not_taken(context, root, path, tenant_id, exc, errors, present, "inbox file"):
                    continue
            seen[rel] = stamp
    seen = {k: v for k, v in seen.items() if k in present}
    context.update_cursor(json.dumps(seen))
    msg = f"inbox: {submitted} submitted, {unchanged} unchanged, {golden} golden datasets, {len(errors)} refused"
    if errors:
        msg += " — " + "; ".join(errors[:20])
    return dg.SkipReason(msg)


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[document_intake, inbox])
