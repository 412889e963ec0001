"""Orchestrator step latency with the embedded extractive responder, over the labelled routing set.

    python benchmarks/agent.py

Indexes the sample documents into a fresh embedded database, runs every labelled question
(tests/data/routing_questions.json, 50 questions, 10 per specialist) through the real orchestrator,
and prints p50/p95 per step (routing, retrieval, skill, generation, verification) and end to end,
plus routing accuracy.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    os.environ.update({"EAP_HOME": tempfile.mkdtemp(prefix="eap-agent-"), "EAP_LOG_JSON": "false",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"})

    from agents import orchestrator
    from agents.deps import build_deps
    from benchmarks.common import ingest_in_process
    from core.db.database import bootstrap, stop_embedded, tenant_session
    from identity.tenancy import create_tenant

    bootstrap()
    tenant, _ = create_tenant("agent-bench")
    ingest_in_process(tenant.id, sorted((ROOT / "samples").glob("*.*")), ROOT)

    labelled = json.loads((ROOT / "tests" / "data" / "routing_questions.json").read_text())
    steps: dict[str, list[float]] = {}
    totals, right, n = [], 0, 0
    with tenant_session(tenant.id) as s:
        orchestrator.run(build_deps(s, subject="warm", role="operator"), "warm up the models", [])
        deps = build_deps(s, subject="bench", role="operator")
        for expected, questions in labelled.items():
            for q in questions:
                t0 = time.perf_counter()
                out = orchestrator.run(deps, q, [])
                totals.append((time.perf_counter() - t0) * 1000)
                right += out.specialist == expected
                n += 1
                for st in out.trace:
                    steps.setdefault(st["step"], []).append(st["ms"])
    stop_embedded()
    print(f"{n} labelled questions, routing accuracy {right / n:.2%}")
    for name, xs in steps.items():
        print(f"  {name:<16} n={len(xs):3d}  p50 {np.percentile(xs, 50):7.1f} ms  p95 {np.percentile(xs, 95):7.1f} ms")
    print(f"  {'end to end':<16} n={n:3d}  p50 {np.percentile(totals, 50):7.1f} ms  "
          f"p95 {np.percentile(totals, 95):7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
