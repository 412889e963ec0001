"""Ingestion sensors.

document_intake: finds queued documents, adds one dynamic partition per new document and launches
batched runs (one run per contiguous range of new partitions, `ingest_batch_size` documents
each); re-queued documents (a changed re-upload) get a run of their own. The cursor remembers
which document versions were requested so a tick never requests one twice.

inbox: each tenant has EAP_HOME/inbox/<tenant>/; new or changed files are submitted through the
same code path as uploads. A sidecar `<file>.meta.json` may set classification, acl_groups, title.
"""


import hashlib
import json
from pathlib import Path

import dagster as dg

from assets.ingestion import documents_partitions
from assets.resources import PlatformDatabase
from core.errors import PlatformError
from core.settings import get_settings
from jobs import ingest_job
from pipeline import ingestion, intake

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dg.sensor(job=ingest_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Queued documents → dynamic partitions → batched ingest runs.")
def document_intake(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SensorResult | dg.SkipReason:
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    queued = intake.queued_documents()
    queued_ids = {d for d, _ in queued}
    # Forget versions that have left the queue (their run started): the cursor stays small.
    requested = {d: h for d, h in requested.items() if d in queued_ids}
    todo = [(d, h) for d, h in queued if requested.get(d) != h]
    if not todo:
        return dg.SkipReason(f"no new documents ({len(queued)} queued, all already requested)")
    existing = set(context.instance.get_dynamic_partitions(documents_partitions.name))
    new = [(d, h) for d, h in todo if d not in existing]
    again = [(d, h) for d, h in todo if d in existing]
    size = get_settings().ingest_batch_size
    runs: list[dg.RunRequest] = []
    for batch in _batches(new, size):
        digest = hashlib.sha256("|".join(f"{d}:{h}" for d, h in batch).encode()).hexdigest()[:24]
        if len(batch) == 1:
            runs.append(dg.RunRequest(run_key=f"doc:{batch[0][0]}:{batch[0][1][:16]}", partition_key=batch[0][0]))
        else:
            runs.append(dg.RunRequest(run_key=f"batch:{digest}",
                                      tags={RANGE_START: batch[0][0], RANGE_END: batch[-1][0],
                                            "eap/documents": str(len(batch))}))
    for d, h in again:
        runs.append(dg.RunRequest(run_key=f"doc:{d}:{h[:16]}", partition_key=d))
    requested.update(dict(todo))
    context.log.info(f"{len(todo)} documents → {len(runs)} runs ({len(new)} new partitions)")
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[documents_partitions.build_add_request([d for d, _ in new])] if new else [],
        cursor=json.dumps(requested),
    )


def _sidecar(path: Path) -> dict:
    meta = path.with_name(path.name + ".meta.json")
    if not meta.exists():
        return {}
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise PlatformError(f"unreadable sidecar {meta.name}: {exc}", code="invalid_sidecar") from None
    if not isinstance(data, dict):
        raise PlatformError(f"sidecar {meta.name} must be a JSON object", code="invalid_sidecar")
    return data


@dg.sensor(minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Per-tenant inbox folders (EAP_HOME/inbox/<tenant>/) → document submissions.")
def inbox(context: dg.SensorEvaluationContext, db: PlatformDatabase) -> dg.SkipReason:
    root = get_settings().inbox_dir
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    if not root.exists():
        return dg.SkipReason(f"inbox folder {root} does not exist")
    tenants = intake.tenants_by_name()
    submitted, unchanged, errors, present = 0, 0, [], set()
    for tenant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        tenant_id = tenants.get(tenant_dir.name)
        if tenant_id is None:
            errors.append(f"{tenant_dir.name}/: no such tenant")
            continue
        for path in sorted(tenant_dir.rglob("*")):
            if not path.is_file() or path.name.startswith(".") or path.name.endswith((".meta.json", ".tmp", ".part")):
                continue
            rel = str(path.relative_to(root))
            present.add(rel)
            st = path.stat()
            sidecar = path.with_name(path.name + ".meta.json")
            stamp = f"{st.st_mtime_ns}:{st.st_size}:{sidecar.stat().st_mtime_ns if sidecar.exists() else 0}"
            if seen.get(rel) == stamp:
                continue
            try:
                meta = _sidecar(path)
                with path.open("rb") as fh:
                    sub = ingestion.submit_document(
                        tenant_id, filename=path.name, stream=fh, classification=meta.get("classification"),
                        acl_groups=meta.get("acl_groups"), title=meta.get("title"), actor="inbox",
                        source="inbox", source_key="inbox:" + str(path.relative_to(tenant_dir)),
                    )
                submitted += 0 if sub.unchanged else 1
                unchanged += 1 if sub.unchanged else 0
            except PlatformError as exc:
                errors.append(f"{rel}: {exc.message}")
                context.log.warning(f"inbox file {rel} refused: {exc.message}")
            except OSError as exc:
                errors.append(f"{rel}: {exc}")
                continue  # retried next tick (e.g. still being copied)
            seen[rel] = stamp
    seen = {k: v for k, v in seen.items() if k in present}
    context.update_cursor(json.dumps(seen))
    msg = f"inbox: {submitted} submitted, {unchanged} unchanged, {len(errors)} refused"
    if errors:
        msg += " — " + "; ".join(errors[:5])
    return dg.SkipReason(msg)
