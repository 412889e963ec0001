"""Chat API under concurrent load, on loopback only (bounded: --clients x --requests).

    python benchmarks/api_load.py [--clients 20] [--requests 10]

Starts the real API (uvicorn) on a free 127.0.0.1 port over a fresh embedded database holding the
sample documents, then: p50/p95 of POST /v1/chat (extractive responder) with N concurrent
clients; the same questions answered in-process (the route's own function: orchestrator, memory, learning,
storage, audit — no HTTP, auth or serialisation) sequentially, so
the API overhead is a difference measured in the same run; and time to the first SSE event and
the first delta. Targets: p95 overhead <= 150 ms, first event <= 300 ms.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTIONS = [
    "How do I release stored hydraulic energy on press line 3?",
    "Which hydraulic oil does the HP-400 press use?",
    "What caused the weld porosity on bracket BR-220?",
    "What does alarm A-117 mean?",
    "How often are the ram guide bearings greased?",
    "Who may remove a lockout padlock?",
]


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10, help="requests per client")
    args = ap.parse_args()
    os.environ.update({"EAP_HOME": tempfile.mkdtemp(prefix="eap-load-"), "EAP_LOG_JSON": "false",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                       "EAP_RATE_LIMIT_USER_PER_MINUTE": "100000", "EAP_RATE_LIMIT_TENANT_PER_MINUTE": "100000"})
    import httpx

    from benchmarks.common import ingest_in_process
    from core.db.database import bootstrap, stop_embedded
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings
    from eap.up import child_env
    from identity.tenancy import create_tenant

    settings = get_settings()
    urls = bootstrap()
    tenant, _ = create_tenant("load")
    ingest_in_process(tenant.id, sorted((ROOT / "samples").glob("*.*")), ROOT)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host",
                             "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            cwd=ROOT, env=child_env(settings, urls))
    base = f"http://127.0.0.1:{port}"
    token = mint_token(settings, tenant_id=tenant.id, tenant=tenant.name, role=Role.operator, subject="load")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:  # warm the model in the server
            for q in QUESTIONS:  # every path once (skills, model seam, composition)
                c.post("/v1/chat", json={"message": q})

        # In-process baseline: exactly what the route runs (orchestrator, memory, learning, storage,
        # audit) without HTTP, authentication, rate limiting and serialisation, sequential, as a
        # user of its own (memories of one user do not leak into the other's measurements).
        from core.llm import default_model
        from core.security import Principal
        from serving.routes.chat import ChatIn, _chat_sync

        me = Principal("load-inproc", tenant.id, tenant.name, Role.operator, ())
        for q in QUESTIONS:  # warm the in-process paths too
            _chat_sync(me, ChatIn(message=q), default_model())
        inproc = []
        for q in QUESTIONS * 3:
            t = time.perf_counter()
            _chat_sync(me, ChatIn(message=q), default_model())
            inproc.append((time.perf_counter() - t) * 1000)

        sequential = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            for q in QUESTIONS * 3:
                t = time.perf_counter()
                c.post("/v1/chat", json={"message": q})
                sequential.append((time.perf_counter() - t) * 1000)

        lat: list[float] = []
        errors = 0
        lock = threading.Lock()

        def client(i: int) -> None:
            nonlocal errors
            with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
                for j in range(args.requests):
                    q = QUESTIONS[(i + j) % len(QUESTIONS)]
                    t = time.perf_counter()
                    r = c.post("/v1/chat", json={"message": q})
                    ms = (time.perf_counter() - t) * 1000
                    with lock:
                        lat.append(ms)
                        errors += r.status_code != 200

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0

        first_event, first_delta = [], []
        with httpx.Client(base_url=base, headers={**headers, "Accept": "text/event-stream"}, timeout=60) as c:
            for q in QUESTIONS * 2:
                t = time.perf_counter()
                fe = fd = None
                with c.stream("POST", "/v1/chat", json={"message": q}) as r:
                    for line in r.iter_lines():
                        if line.startswith("event: ") and fe is None:
                            fe = (time.perf_counter() - t) * 1000
                        if line == "event: delta" and fd is None:
                            fd = (time.perf_counter() - t) * 1000
                first_event.append(fe)
                first_delta.append(fd)
    finally:
        proc.terminate()
        proc.wait(20)
        stop_embedded()

    print(f"{args.clients} clients x {args.requests} requests: {len(lat)} in {wall:.1f}s "
          f"({len(lat) / wall:.1f} req/s), errors {errors}")
    print(f"POST /v1/chat, {args.clients} clients p50 {pct(lat, 50):8.1f} ms   p95 {pct(lat, 95):8.1f} ms")
    print(f"in-process answer      p50 {pct(inproc, 50):8.1f} ms   p95 {pct(inproc, 95):8.1f} ms (sequential)")
    print(f"API, one client        p50 {pct(sequential, 50):8.1f} ms   p95 {pct(sequential, 95):8.1f} ms (sequential)")
    print(f"API overhead (one client minus in-process): p50 {pct(sequential, 50) - pct(inproc, 50):.1f} ms, "
          f"p95 {pct(sequential, 95) - pct(inproc, 95):.1f} ms   (target p95 <= 150)")
    print(f"SSE first event        p50 {pct(first_event, 50):8.1f} ms   p95 {pct(first_event, 95):8.1f} ms "
          "(target <= 300)")
    print(f"SSE first delta        p50 {pct(first_delta, 50):8.1f} ms   p95 {pct(first_delta, 95):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
