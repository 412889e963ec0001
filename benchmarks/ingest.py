"""Ingestion throughput through the real pipeline (real Dagster job, real embedded PostgreSQL).

    python benchmarks/ingest.py [FOLDER] [--limit N]

FOLDER defaults to the Python 3.11 HTML documentation (`apt-get install python3.11-doc`,
/usr/share/doc/python3.11/html, 530 pages). Prints docs/s, chunks/s, seconds per stage, the raw
embedding throughput of the same model measured in the same run, and the ratio of end-to-end
chunks/s to that raw ceiling (target ≥ 0.8), plus parse+chunk docs/s (target ≥ 10).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ["document_raw", "document_parsed", "document_classified", "document_sanitised", "document_chunks",
          "document_embeddings", "search_index"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default="/usr/share/doc/python3.11/html")
    ap.add_argument("--limit", type=int, default=0, help="ingest at most N files (0 = all)")
    ap.add_argument("--batch", type=int, default=50, help="documents per Dagster run (sensor batch size)")
    ap.add_argument("--ext", default="html", help="comma-separated extensions to ingest (default html; 'all')")
    args = ap.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"no such folder {folder}: apt-get install python3.11-doc, or pass a folder", file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="eap-bench-")
    os.environ.update({"EAP_HOME": home, "EAP_INGEST_BATCH_SIZE": str(args.batch), "EAP_LOG_JSON": "false",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"})

    import dagster as dg

    import definitions
    from core.db.database import bootstrap, stop_embedded
    from core.embedding import get_embedder
    from eap.ingest import collect, submit_paths
    from identity.tenancy import create_tenant
    from sensors.ingestion import document_intake

    bootstrap()
    tenant, _ = create_tenant("bench")
    files = collect([str(folder)])
    if args.ext != "all":
        wanted = {"." + e.strip().lstrip(".").lower() for e in args.ext.split(",")}
        files = [f for f in files if f.suffix.lower() in wanted]
    if args.limit:
        files = files[: args.limit]
    t0 = time.perf_counter()
    queued, refused = submit_paths(tenant.id, files, classification="I", acl=None, actor="bench", root=folder,
                                   out=open(os.devnull, "w"))
    t_submit = time.perf_counter() - t0
    print(f"files: {len(files)}  submitted: {len(queued)}  refused: {len(refused)}  submit: {t_submit:.1f}s")

    embedder = get_embedder()
    embedder.embed(["warm-up"])  # model load is not throughput
    inst = dg.DagsterInstance.ephemeral()
    resources = {"db": definitions.defs.resources["db"]}
    job = definitions.defs.resolve_job_def("ingest_documents")
    res = document_intake(dg.build_sensor_context(instance=inst, resources=resources))
    for req in res.dynamic_partitions_requests:
        inst.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
    stage_secs = dict.fromkeys(STAGES, 0.0)
    t1 = time.perf_counter()
    for rr in res.run_requests:
        result = job.execute_in_process(instance=inst, tags=rr.tags, partition_key=rr.partition_key,
                                        resources=resources)
        seen = set()
        for ev in result.get_asset_materialization_events():
            key = ev.asset_key.to_user_string()
            if key in seen:
                continue  # one event per partition; the run-level timing is on each
            seen.add(key)
            secs = ev.materialization.metadata.get("seconds")
            if secs is not None:
                stage_secs[key] += float(secs.value)
    wall = time.perf_counter() - t1

    from sqlalchemy import text

    from core.db.database import tenant_session

    with tenant_session(tenant.id) as s:
        statuses = dict(s.execute(text("SELECT status, count(*) FROM documents GROUP BY status")).all())
        n_chunks = s.execute(text("SELECT count(*) FROM chunks")).scalar()
        sample = [r[0] for r in s.execute(text("SELECT text FROM chunks ORDER BY random() LIMIT 1024")).all()]
    # Raw ceiling: the same model on the same chunk texts, nothing else.
    t2 = time.perf_counter()
    embedder.embed(sample)
    raw_cps = len(sample) / (time.perf_counter() - t2)

    n_docs = sum(statuses.values())
    e2e_cps = n_chunks / wall if wall else 0.0
    parse_chunk = stage_secs["document_parsed"] + stage_secs["document_chunks"]
    print(f"documents: {n_docs}  statuses: {statuses}  chunks: {n_chunks}  runs: {len(res.run_requests)}")
    print(f"wall time (runs): {wall:.1f}s   docs/s: {n_docs / wall:.2f}   chunks/s: {e2e_cps:.1f}")
    for k in STAGES:
        print(f"  {k:<22} {stage_secs[k]:8.1f}s  ({100 * stage_secs[k] / wall:5.1f}%)")
    print(f"raw embedding ceiling ({embedder.name}, {len(sample)} chunks): {raw_cps:.1f} chunks/s")
    print(f"ratio end-to-end / raw embedding: {e2e_cps / raw_cps:.2f}   (target >= 0.8)")
    print(f"parse+chunk: {n_docs / parse_chunk:.1f} docs/s   (target >= 10)" if parse_chunk else "")
    stop_embedded()
    return 0


if __name__ == "__main__":
    sys.exit(main())
