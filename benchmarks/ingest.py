"""Ingestion throughput of the product's own path: upload → Dagster daemon → indexed.

    python benchmarks/ingest.py [--docs N] [--folder DIR] [--batch B] [--no-in-process]

What it does, in one run on this machine:

1. Picks N documents (default 200): HTML pages of the PostgreSQL 15 manual (`apt-get install
   postgresql-doc-15`, 1,169 pages), else of the Python 3.11 documentation (`apt-get install
   python3.11-doc`, 530 pages), or of --folder; synthetic text documents when none exists.
   They are copied into a temporary folder (the same set for every figure).
2. Starts the platform the way a customer does: `eap up --api-port P --dagster-port Q` as a subprocess,
   in a temporary EAP_HOME, on free loopback ports, and reads the admin token it prints. With EAP_ENV unset
   `eap up` submits its sample documents to tenant "default": the benchmark waits until they are settled and
   counts them separately; the benchmark documents go to their own tenant ("bench", made with `eap tenant
   create`, token from `eap token`).
3. Measures the raw throughput of the same embedding model (core.embedding, in this process, no platform
   around it) on texts of ~256 word pieces cut from the same documents, both ways it runs here (one pass on
   every core, and one pass per core on one thread each as the embedding service does), once before and once
   after the real path. The ceiling is the faster way's mean (all samples are printed: the machine's speed
   drifts).
4. Uploads the documents through POST /v1/documents (Class I), then polls GET /v1/documents until every one is
   settled (indexed, awaiting approval, rejected or failed). The document_intake sensor in the Dagster daemon
   batches them into ingest_documents runs; nothing in this process runs the pipeline.
5. Reads the runs of the platform's Dagster instance: time per stage (the "seconds" each asset records),
   run wall time (RUN_START → end), step compute time, run overhead (wall minus step compute: Dagster's
   bookkeeping between steps; the model load falls in the first embedding step) and launch latency (run
   created → RUN_START: queueing, the daemon's tick, the run worker's process start and imports).
6. Stops the platform (SIGTERM to `eap up`, which stops its children and the embedded database).
7. Unless --no-in-process: the old, in-process figure — the same documents through the sensor function and
   `execute_in_process` in a fresh EAP_HOME, no daemon, no run processes — printed beside the real one and
   clearly labelled. It is not what a customer gets; the difference between the two is the cost of the runs.

Exit status: 0 when every document settled; 1 when some did not (what is stuck is printed); 2 when the
platform did not come up (its output and log tails are printed).

One script of ~530 lines on purpose: it is run by hand as a standalone procedure (start the platform, upload,
poll, read the Dagster runs, stop, compare) whose steps share one temporary EAP_HOME and one set of documents.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The PostgreSQL 15 manual (`apt-get install postgresql-doc-15`, 1,169 HTML pages: the corpus the issue's
# measurements were made on, and enough pages for a 1,000-document run); else the Python 3.11 docs (530).
MANUALS = (Path("/usr/share/doc/postgresql-doc-15/html"), Path("/usr/share/doc/python3.11/html"))
DEFAULT_FOLDER = next((m for m in MANUALS if m.is_dir()), MANUALS[-1])
STAGES = ["document_raw", "document_parsed", "document_classified", "document_sanitised", "document_chunks",
          "document_embeddings", "search_index"]
# The embedding step's metadata (assets/ingestion.py document_embeddings): how long the model took to load,
# how long the run waited for another run's embedding, how long it embedded and how many chunks.
EMBED_FIELDS = ("chunks", "model_load_seconds", "embedding_slot_wait_seconds", "embed_seconds")
SETTLED = {"indexed", "awaiting_approval", "rejected", "failed"}
BENCH_TENANT = "bench"
# Settings the benchmark passes through to the platform (the model/backend under test, batch sizes);
# every other EAP_* / database variable is dropped so the run is self-contained.
PASS_THROUGH = ("EAP_EMBEDDING_", "EAP_INGEST_")


class PlatformDown(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------- documents

def pick_documents(folder: Path | None, n: int, dest: Path) -> str:
    """Copy n documents into dest; returns a description of where they came from."""
    dest.mkdir(parents=True, exist_ok=True)
    src = folder or DEFAULT_FOLDER
    files = sorted(p for p in src.rglob("*.html") if p.is_file() and "_sources" not in p.parts) if src.is_dir() else []
    if files:
        step = max(1, len(files) // n)  # spread over the manual, not just its first chapter
        chosen = files[::step][:n]
        for i, f in enumerate(chosen):
            shutil.copyfile(f, dest / f"{i:05d}_{f.name}")
        return f"{len(chosen)} HTML pages of {src} ({len(files)} available)"
    if folder is not None:
        raise SystemExit(f"error: no HTML pages in {folder}")
    import random

    rnd = random.Random(7)
    words = ("pump valve pressure maintenance interval sensor calibration torque bearing lubricant filter "
             "hydraulic inspection procedure operator safety lockout temperature flow motor coupling seal "
             "alignment vibration checklist replacement schedule tolerance clearance gasket").split()
    for i in range(n):
        paras = [" ".join(rnd.choice(words) for _ in range(rnd.randint(60, 140))).capitalize() + "."
                 for _ in range(rnd.randint(4, 14))]
        (dest / f"{i:05d}_synthetic.md").write_text(f"# Synthetic manual section {i}\n\n" + "\n\n".join(paras))
    return f"{n} synthetic text documents ({DEFAULT_FOLDER} not found: apt-get install postgresql-doc-15)"


def plain_text(path: Path) -> str:
    raw = path.read_text(errors="replace")
    if path.suffix == ".html":
        raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
        raw = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    return re.sub(r"\s+", " ", raw).strip()


def raw_texts(embedder: Any, docs: list[Path], count: int, pieces: int = 256) -> list[str]:
    """`count` distinct texts of ~`pieces` word pieces from the documents (the embedder's own tokenizer
    when it exposes one; ~0.75 words per word piece otherwise)."""
    tok = getattr(getattr(embedder, "_model", None), "tokenizer", None) or getattr(embedder, "tokenizer", None)
    out: list[str] = []
    for d in docs:
        text = plain_text(d)
        if tok is not None and hasattr(tok, "encode"):
            ids = tok.encode(text, add_special_tokens=False, verbose=False)  # slicing, not encoding: no length warning
            for i in range(0, len(ids) - pieces + 3, pieces - 2):
                out.append(tok.decode(ids[i: i + pieces - 2]))
        else:
            words = text.split()
            size = int(pieces * 0.75)
            out.extend(" ".join(words[i: i + size]) for i in range(0, len(words) - size + 1, size))
        if len(out) >= count:
            break
    while out and len(out) < count:  # few/short documents: repeat with a marker (distinct texts, no cache hits)
        out.append(f"{len(out)} {out[len(out) % max(1, len(out))]}")
    return out[:count]


def measure_raw(embedder: Any, texts: list[str], threads: int) -> float:
    """Chunks/s of one `embed` call over `texts`, torch set to `threads` intra-op threads (process-wide)."""
    import torch

    torch.set_num_threads(threads)
    embedder.embed(texts[:8])  # warm-up (first call allocates); not part of the figure
    t0 = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t0)


class RawCeiling:
    """The raw embedding ceiling: the same model in this process, with no platform around it, in both ways it
    can run here: one forward pass at a time on every core (what the API does) and one pass per core on one
    thread each (what `eap up`'s embedding service does for ingestion). The ceiling is the faster of the two,
    measured before and after the real path (the machine's speed drifts; both samples are printed)."""

    def __init__(self, texts: list[str]) -> None:
        from core.embedding import get_embedder, local_embedder
        from core.settings import get_settings

        s = get_settings()
        self.cores = os.cpu_count() or 1
        workers = s.embedding_service_workers or self.cores
        self.texts = texts
        self.ways = {f"1 pass x {self.cores} threads": (get_embedder(), self.cores)}
        if workers > 1:
            self.ways[f"{workers} passes x 1 thread"] = (local_embedder(s.embedding_backend, workers), 1)
        self.samples: dict[str, list[float]] = {k: [] for k in self.ways}
        self.name = getattr(get_embedder(), "name", "?")

    def measure(self) -> str:
        for way, (embedder, threads) in self.ways.items():
            self.samples[way].append(measure_raw(embedder, self.texts, threads))
        return ", ".join(f"{way}: {v[-1]:.1f}" for way, v in self.samples.items())

    def ceiling(self) -> tuple[str, float]:
        means = {way: statistics.mean(v) for way, v in self.samples.items()}
        best = max(means, key=lambda k: means[k])
        return best, means[best]


# ----------------------------------------------------------------------------------------------- platform

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def platform_env(home: Path, batch: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("EAP_") or k in ("DATABASE_URL", "DAGSTER_HOME")) or k.startswith(PASS_THROUGH)}
    env.update({"EAP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1"})
    if batch:
        env["EAP_INGEST_BATCH_SIZE"] = str(batch)
    return env


class Platform:
    """`eap up` as a subprocess; its output goes to EAP_HOME/eap-up.out."""

    def __init__(self, home: Path, env: dict[str, str], api_port: int, dagster_port: int) -> None:
        self.home, self.env = home, env
        self.api = f"http://127.0.0.1:{api_port}"
        self.out_path = home / "eap-up.out"
        eap = Path(sys.executable).parent / "eap"
        cmd = [str(eap)] if eap.exists() else [sys.executable, "-m", "eap.cli"]
        home.mkdir(parents=True, exist_ok=True)
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([*cmd, "up", "--api-port", str(api_port), "--dagster-port", str(dagster_port)],
                                     cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_up(self, timeout_s: float) -> str:
        """The admin token `eap up` prints once everything answers; PlatformDown otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = re.search(r"^EAP_ADMIN_TOKEN=(\S+)$", self.output(), re.M)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise PlatformDown(f"`eap up` exited with code {self.proc.returncode} before the platform was up")
            time.sleep(0.5)
        raise PlatformDown(f"`eap up` did not report the platform up within {timeout_s:.0f}s")

    def diagnostics(self) -> str:
        parts = [f"--- eap up output ({self.out_path}) ---", "\n".join(self.output().splitlines()[-25:])]
        for log in sorted((self.home / "logs").glob("*.log")):
            parts += [f"--- {log} (last lines) ---", "\n".join(log.read_text(errors="replace").splitlines()[-10:])]
        return "\n".join(parts)

    def stop(self, grace_s: float = 120.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # eap up stops its children and the embedded database
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                print(f"warning: `eap up` (pid {self.proc.pid}) did not stop within {grace_s:.0f}s; killing it",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()

    def eap(self, *args: str) -> str:
        eap = Path(sys.executable).parent / "eap"
        cmd = [str(eap)] if eap.exists() else [sys.executable, "-m", "eap.cli"]
        res = subprocess.run([*cmd, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300,
                             check=False)
        if res.returncode != 0:
            raise PlatformDown(f"`eap {' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()[-800:]}")
        return res.stdout


def list_documents(client: Any, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        r = client.get("/v1/documents", params={"limit": 500, "offset": len(items)},
                       headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        body = r.json()
        items += body["items"]
        if not body["items"] or len(items) >= body["total"]:
            return items


def count_documents(client: Any, token: str, status: str | None = None) -> int:
    """How many of the tenant's documents (with `status`): the list's total, one row fetched."""
    params: dict[str, Any] = {"limit": 1, **({"status": status} if status else {})}
    r = client.get("/v1/documents", params=params, headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    return int(r.json()["total"])


def wait_settled(client: Any, token: str, ids: set[str] | None, idle_s: float,
                 label: str) -> tuple[list[dict[str, Any]], float]:
    """Poll until every document of the tenant (all of `ids`, when given) is settled or nothing moved for idle_s.
    Returns the documents (of `ids`, or all) and the monotonic time the last one settled. A poll asks for three
    counts (all, queued, parsing), not the list: listing every document every 5 s cost the API and this process
    ~20 s of CPU over a 1,000-document run, taken from the path being measured. The list is read once at the
    end."""
    started = last_change = settled_at = time.monotonic()
    last_state: tuple[int, int, int] | None = None
    last_done = -1
    while True:
        total = count_documents(client, token)
        state = (total, count_documents(client, token, "queued"), count_documents(client, token, "parsing"))
        done = total - state[1] - state[2]
        now = time.monotonic()
        if state != last_state:
            last_state, last_change = state, now
            if sys.stdout.isatty():
                print(f"\r  {label}: {done}/{total} settled  ", end="", flush=True)
        if done > last_done:
            last_done, settled_at = done, now
            if not sys.stdout.isatty():
                print(f"  {label}: {done}/{total} settled after {now - started:.0f}s", flush=True)
        if (done == total and (ids is None or total >= len(ids))) or now - last_change > idle_s:
            if sys.stdout.isatty():
                print()
            docs = [d for d in list_documents(client, token) if ids is None or d["id"] in ids]
            return docs, settled_at
        time.sleep(5.0)


# ------------------------------------------------------------------------------------------ Dagster runs

def run_figures(bench_ids: set[str], since: float) -> dict[str, Any]:
    """Per-stage seconds, run wall/step/overhead/launch times of the ingest_documents runs that hold
    benchmark documents (read from the platform's Dagster instance, as `eap ingest` does)."""
    from eap.ingest_status import open_instance

    inst = open_instance()
    try:
        return _runs_of(inst, bench_ids, since)
    finally:
        inst.dispose()


def _runs_of(inst: Any, bench_ids: set[str], since: float) -> dict[str, Any]:
    import dagster as dg

    from sensors.ingestion import RANGE_START

    records = inst.get_run_records(dg.RunsFilter(job_name="ingest_documents"), limit=10_000)
    stage = dict.fromkeys(STAGES, 0.0)
    out: dict[str, Any] = {"runs": 0, "run_statuses": {}, "wall": 0.0, "steps": 0.0, "launch": [], "walls": [],
                           "first_create": None, "last_end": None, "stage": stage,
                           "embed": dict.fromkeys(EMBED_FIELDS, 0.0)}
    for rec in records:
        tags = rec.dagster_run.tags
        key = tags.get("dagster/partition") or tags.get(RANGE_START)
        if key not in bench_ids or rec.create_timestamp.timestamp() < since:
            continue
        out["runs"] += 1
        st = rec.dagster_run.status.value
        out["run_statuses"][st] = out["run_statuses"].get(st, 0) + 1
        created = rec.create_timestamp.timestamp()
        out["first_create"] = min(out["first_create"] or created, created)
        emb_step = None
        if rec.start_time:
            stats = inst.get_run_step_stats(rec.dagster_run.run_id)
            emb_step = next((s for s in stats if s.step_key == "search_index"), None)
        out.setdefault("timeline", []).append({
            "created": created, "start": rec.start_time, "end": rec.end_time,
            "docs": int(tags.get("eap/documents", "1")),
            "embed": (emb_step.start_time, emb_step.end_time) if emb_step and emb_step.end_time else None})
        if rec.start_time and rec.end_time:
            wall = rec.end_time - rec.start_time
            stats = inst.get_run_step_stats(rec.dagster_run.run_id)
            steps = sum((s.end_time or 0) - (s.start_time or 0) for s in stats if s.start_time and s.end_time)
            out["wall"] += wall
            out["walls"].append(wall)
            out["steps"] += steps
            out["launch"].append(rec.start_time - created)
            out["last_end"] = max(out["last_end"] or rec.end_time, rec.end_time)
        seen: set[str] = set()
        for entry in inst.all_logs(rec.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            mat = entry.dagster_event.event_specific_data.materialization
            name = mat.asset_key.to_user_string()
            if name in seen:  # a range run records one event per partition, each with the run's timing
                continue
            seen.add(name)
            secs = mat.metadata.get("seconds")
            if secs is not None and name in stage:
                stage[name] += float(secs.value)
            if name == "document_embeddings":  # the embedding step's split: model load, slot wait, embedding
                for k in EMBED_FIELDS:
                    if k in mat.metadata:
                        out["embed"][k] += float(mat.metadata[k].value)
    return out


# ---------------------------------------------------------------------------------------- in process

def in_process(folder: Path, batch: int | None) -> dict[str, Any]:
    """The old figure: submit + sensor function + execute_in_process, in a fresh EAP_HOME (run in a child
    process of this script so its settings and embedded database are its own)."""
    home = Path(tempfile.mkdtemp(prefix="eap-bench-inproc-"))
    env = platform_env(home, batch)
    res = subprocess.run([sys.executable, __file__, "--_in-process", str(folder)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    shutil.rmtree(home, ignore_errors=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"in-process run failed ({res.returncode}): {res.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _in_process_child(folder: Path) -> int:
    import dagster as dg
    from sqlalchemy import text

    import definitions
    from core.db.database import bootstrap, stop_embedded, tenant_session
    from core.embedding import get_embedder
    from eap.ingest import collect, submit_paths
    from identity.tenancy import create_tenant
    from sensors.ingestion import document_intake

    bootstrap()
    try:
        tenant, _ = create_tenant(BENCH_TENANT)
        files = collect([str(folder)])
        submit_paths(tenant.id, files, classification="I", acl=None, actor="bench", root=folder,
                     out=open(os.devnull, "w"))
        get_embedder().embed(["warm-up", "model load is not throughput"])
        inst = dg.DagsterInstance.ephemeral()
        resources: dict[str, Any] = {"db": (definitions.defs.resources or {})["db"]}
        job = definitions.defs.resolve_job_def("ingest_documents")
        t0 = time.perf_counter()
        res = document_intake(dg.build_sensor_context(instance=inst, resources=resources))
        runs: list[dg.RunRequest] = []
        if isinstance(res, dg.SensorResult):
            for req in res.dynamic_partitions_requests or []:
                inst.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
            runs = list(res.run_requests or [])
        for rr in runs:
            job.execute_in_process(instance=inst, tags=rr.tags, partition_key=rr.partition_key, resources=resources)
        wall = time.perf_counter() - t0
        with tenant_session(tenant.id) as s:
            rows = s.execute(text("SELECT status, count(*) FROM documents GROUP BY status")).all()
            statuses: dict[str, int] = {str(k): int(v) for k, v in rows}
            chunks = s.execute(text("SELECT count(*) FROM chunks")).scalar() or 0
        print(json.dumps({"wall": wall, "docs": sum(statuses.values()), "statuses": statuses, "chunks": chunks,
                          "runs": len(runs)}))
    finally:
        stop_embedded()
    return 0


# --------------------------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200, help="number of documents (default 200)")
    ap.add_argument("--folder", type=Path, default=None, help=f"take HTML pages from here (default {DEFAULT_FOLDER})")
    ap.add_argument("--batch", type=int, default=None, help="EAP_INGEST_BATCH_SIZE for the platform "
                    "(default: the product's setting)")
    ap.add_argument("--raw-texts", type=int, default=256, help="texts per raw embedding measurement (default 256)")
    ap.add_argument("--up-timeout", type=float, default=300.0, help="seconds for `eap up` to come up")
    ap.add_argument("--idle-timeout", type=float, default=900.0,
                    help="give up when no document changed status for this long (default 900 s)")
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process comparison figure")
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary EAP_HOME (logs) afterwards")
    ap.add_argument("--_in-process", dest="in_process_child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_process_child:
        return _in_process_child(args.in_process_child)

    work = Path(tempfile.mkdtemp(prefix="eap-bench-"))
    home, docs_dir = work / "home", work / "docs"
    print(f"machine: {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}); work folder {work}")
    print(f"documents: {pick_documents(args.folder, args.docs, docs_dir)}")
    doc_files = sorted(docs_dir.iterdir())
    env = platform_env(home, args.batch)
    os.environ.clear()
    os.environ.update(env)  # this process reads the same EAP_HOME (token, Dagster instance, embedder settings)

    import httpx

    from core.embedding import get_embedder

    texts = raw_texts(get_embedder(), doc_files, args.raw_texts)
    raw_ceiling = RawCeiling(texts)
    print(f"raw embedding ({raw_ceiling.name}, {len(texts)} texts of ~256 word pieces, chunks/s), before: ",
          end="", flush=True)
    print(raw_ceiling.measure())

    api_port, dagster_port = free_port(), free_port()
    platform = Platform(home, env, api_port, dagster_port)
    status = 0
    real: dict[str, Any] = {}
    try:
        t_up = time.monotonic()
        try:
            admin_token = platform.wait_up(args.up_timeout)
        except PlatformDown as exc:
            print(f"\nerror: the platform did not come up: {exc}\n{platform.diagnostics()}\n(kept {work} for "
                  "diagnosis)", file=sys.stderr)
            return 2
        print(f"platform up in {time.monotonic() - t_up:.0f}s: API {platform.api}, "
              f"Dagster UI http://127.0.0.1:{dagster_port}")
        platform.eap("tenant", "create", BENCH_TENANT)
        token = platform.eap("token", "--tenant", BENCH_TENANT, "--role", "admin").strip().splitlines()[-1]
        with httpx.Client(base_url=platform.api, timeout=120) as client:
            # The samples `eap up` seeds (tenant default) are ingested first and kept out of the figures.
            t_s = time.monotonic()
            samples, _ = wait_settled(client, admin_token, None, args.idle_timeout, "sample documents (default)")
            print(f"sample documents (tenant default, not counted): {len(samples)} settled in "
                  f"{time.monotonic() - t_s:.0f}s: " + ", ".join(sorted({d['status'] for d in samples})))

            since = time.time()
            t0 = time.monotonic()
            ids: set[str] = set()
            for f in doc_files:
                with open(f, "rb") as fh:
                    r = client.post("/v1/documents", headers={"Authorization": f"Bearer {token}"},
                                    files={"file": (f.name, fh)}, data={"classification": "I"})
                if r.status_code not in (200, 202):
                    print(f"  upload refused {f.name}: {r.status_code} {r.text[:200]}")
                    continue
                ids.add(r.json()["document_id"])
            t_uploaded = time.monotonic() - t0
            print(f"uploaded {len(ids)} documents to tenant {BENCH_TENANT} in {t_uploaded:.1f}s "
                  f"({len(ids) / t_uploaded:.1f} docs/s)")
            docs, settled_at = wait_settled(client, token, ids, args.idle_timeout, "benchmark documents")
        e2e = settled_at - t0
        statuses: dict[str, int] = {}
        for d in docs:
            statuses[d["status"]] = statuses.get(d["status"], 0) + 1
        n_docs = len(docs)
        chunks = sum(int(d["chunk_count"]) for d in docs)
        stuck = [d for d in docs if d["status"] not in SETTLED]
        try:
            real = run_figures(ids, since - 1)
        except Exception as exc:  # noqa: BLE001 - the throughput figures stand without the run breakdown
            print(f"warning: could not read the Dagster runs: {type(exc).__name__}: {exc}")
        real.update({"e2e": e2e, "docs": n_docs, "chunks": chunks, "statuses": statuses, "upload": t_uploaded,
                     "since": since})
        if stuck:
            status = 1
            print(f"error: {len(stuck)} document(s) not settled after {args.idle_timeout:.0f}s without progress "
                  f"(statuses {statuses}); see `eap ingest` diagnostics and {home / 'logs'}", file=sys.stderr)
    finally:
        if "core.db.database" in sys.modules:  # reading the Dagster runs took a handle on the embedded server
            from core.db.database import dispose_engines, stop_embedded

            dispose_engines()
            stop_embedded()  # ours only: the server stops with `eap up`, which holds the other handle
        print("stopping the platform…", flush=True)
        platform.stop()
    print("raw embedding, after: ", end="", flush=True)
    print(raw_ceiling.measure())
    raw_way, raw = raw_ceiling.ceiling()

    inproc: dict[str, Any] | None = None
    if not args.no_in_process:
        print("in-process comparison (sensor function + execute_in_process, fresh EAP_HOME)…", flush=True)
        try:
            inproc = in_process(docs_dir, args.batch)
        except RuntimeError as exc:
            print(f"warning: {exc}")

    # ----------------------------------------------------------------------------------------- report
    e2e, n_docs, chunks = real["e2e"], real["docs"], real["chunks"]
    cps = chunks / e2e if e2e else 0.0
    print("\n=== the product's own path: upload → Dagster daemon (document_intake → ingest_documents) → indexed ===")
    print(f"documents: {n_docs}  statuses: {real['statuses']}  chunks: {chunks}")
    print(f"wall time (first upload → last document settled): {e2e:.1f}s   "
          f"docs/s: {n_docs / e2e:.2f}   chunks/s: {cps:.1f}")
    if real.get("runs"):
        runs, wall, steps = real["runs"], real["wall"], real["steps"]
        span = (real["last_end"] or 0) - (real["first_create"] or 0)
        print(f"Dagster runs: {runs}  (statuses {real['run_statuses']})")
        print(f"  first run created → last run ended: {span:.1f}s; sum of run wall times {wall:.1f}s "
              f"(mean {statistics.mean(real['walls']):.1f}s per run)" if real["walls"] else "")
        print(f"  step compute {steps:.1f}s; run overhead (run wall − step compute) {wall - steps:.1f}s "
              f"({100 * (wall - steps) / wall:.0f}% of run time)" if wall else "")
        if real["launch"]:
            print(f"  launch latency (run created → RUN_START: queue, daemon tick, run-worker process start and "
                  f"imports): mean {statistics.mean(real['launch']):.1f}s, "
                  f"max {max(real['launch']):.1f}s")
        # When each run was created, started and ended, and when its pipelined step (op search_index: parse to
        # index) ran, in seconds from the first run's creation: the embedder idles wherever no run is in it.
        print("  runs (s from the first upload: created / started / pipeline step / ended; documents):")
        t0 = real["since"]

        def at(t: float | None) -> str:
            return f"{t - t0:6.1f}" if t else "     –"
        for r in sorted(real.get("timeline", []), key=lambda r: r["created"]):
            emb_span = f"{at(r['embed'][0])}–{at(r['embed'][1])}" if r["embed"] else "       –      "
            print(f"    {at(r['created'])} / {at(r['start'])} / {emb_span} / {at(r['end'])};  {r['docs']:4d}")
        print("  time per stage (sum over runs; % of sum of run wall times):")
        for k in STAGES:
            secs = real["stage"][k]
            print(f"    {k:<22} {secs:8.1f}s  ({100 * secs / wall if wall else 0:5.1f}%)")
        emb = real["embed"]
        if emb["embed_seconds"]:
            # Where the embedding ceiling is lost: the embedder idle (no run had chunks ready) or slower than raw
            # (other stages and processes competing for the cores while it embeds).
            print(f"  embedding inside the runs: {emb['chunks']:.0f} chunks in {emb['embed_seconds']:.1f}s = "
                  f"{emb['chunks'] / emb['embed_seconds']:.1f} chunks/s; embedder busy "
                  f"{100 * emb['embed_seconds'] / e2e:.0f}% of the wall time; model loads "
                  f"{emb['model_load_seconds']:.1f}s, slot waits {emb['embedding_slot_wait_seconds']:.1f}s (sums)")
    print("raw embedding, same model, same run (chunks/s, before / after / mean): " + "; ".join(
        f"{way} {v[0]:.1f} / {v[-1]:.1f} / {statistics.mean(v):.1f}" for way, v in raw_ceiling.samples.items()))
    print(f"ceiling: {raw:.1f} chunks/s ({raw_way}, the faster way)")
    print(f"RATIO real path chunks/s / raw embedding: {cps / raw:.2f}   (target >= 0.8)")
    if inproc:
        icps = inproc["chunks"] / inproc["wall"] if inproc["wall"] else 0.0
        print("\n--- for comparison only: in process (sensor function + execute_in_process; no daemon, no run "
              "processes, not what a customer gets) ---")
        print(f"documents: {inproc['docs']}  statuses: {inproc['statuses']}  chunks: {inproc['chunks']}  "
              f"runs: {inproc['runs']}")
        print(f"wall time: {inproc['wall']:.1f}s   docs/s: {inproc['docs'] / inproc['wall']:.2f}   "
              f"chunks/s: {icps:.1f}   ratio to raw embedding: {icps / raw:.2f}")
    print(f"\nmachine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}")
    if not args.keep_home:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
