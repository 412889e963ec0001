"""The long-lived embedding process of `eap up`: the shipped local model, loaded once, behind an
OpenAI-compatible `POST /v1/embeddings` on 127.0.0.1, for the Dagster run workers.

Why: every `ingest_documents` run is a new process. Loading torch and the model in each run cost seconds
of CPU per run, and two runs embedding at once on 2 cores only contended for the same cores. With this
process the runs send their chunks here (through LiteLLM, like every model call: core.embedding
`ServiceEmbedder`), the model is loaded once for the platform's lifetime, and its forward passes run on a
fixed pool of workers, one core each (EAP_EMBEDDING_SERVICE_WORKERS, default one per core): the embedding
work of concurrent runs is queued, not interleaved. One pass per core rather than one pass on every core:
a pass on 2 threads stalls whenever either thread loses its core to the run workers or the database, and
even on an idle machine two single-threaded passes do ~9 % more (core.embedding.LocalEmbedder).

The vectors are the local model's own (same backend, same weights): they carry the local model's name,
so an index built through this process and one built in process are interchangeable.

Security: loopback only, and every request needs the bearer key `eap up` writes to
EAP_HOME/secrets/embedding_service.key (0600) and hands to its Dagster children.

    python -m eap.embedding_service --port P     (EAP_EMBEDDING_SERVICE_KEY_FILE names the key file)

Starlette + uvicorn (already the API's stack) rather than a hand-written HTTP server.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import os
import sys
from typing import Any

MAX_INPUTS = 2048  # per request; ServiceEmbedder sends 256
MAX_BODY_BYTES = 32 * 1024 * 1024


def create_app(key: str, workers: int = 1) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from core.embedding import (
        LOCAL_ALIASES,
        EmbeddingError,
        canonical_local_name,
        local_embedder_named,
        local_model_name,
    )

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message, "type": "invalid_request_error"}},
                            status_code=status)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": local_model_name()})

    async def embeddings(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {key}".encode()):
            return error(401, "unauthorized", "a valid bearer key is required")
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.json()
        except ValueError:
            return error(422, "invalid_json", "the body must be JSON")
        if not isinstance(body, dict):
            return error(422, "invalid_input", "the body must be a JSON object with model and input")
        model, inputs = body.get("model"), body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(model, str) or model not in LOCAL_ALIASES:
            return error(404, "model_not_found",
                         f"this service serves the local model only ({', '.join(LOCAL_ALIASES)})")
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_INPUTS \
                or not all(isinstance(t, str) for t in inputs):
            return error(422, "invalid_input", f"input must be 1..{MAX_INPUTS} strings")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return error(422, "invalid_input", "encoding_format must be float or base64")
        name = canonical_local_name(model)
        try:
            # One embedder per precision, loaded on first use; its `workers` passes at once, one core each.
            vectors = await run_in_threadpool(lambda: local_embedder_named(name, workers).embed(inputs))
        except EmbeddingError as exc:
            return error(502, "embedding_failed", str(exc))
        return JSONResponse({
            "object": "list", "model": name,
            # base64: the vector's little-endian float32 bytes (OpenAI's encoding_format), far cheaper to build and
            # read than 384 JSON numbers.
            "data": [{"object": "embedding", "index": i,
                      "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if fmt == "base64"
                      else v.tolist()} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        })

    return Starlette(routes=[Route("/health", health), Route("/v1/embeddings", embeddings, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eap.embedding_service")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    from core.settings import get_settings

    key_file = get_settings().embedding_service_key_file
    if key_file is None or not key_file.is_file():
        print("error: EAP_EMBEDDING_SERVICE_KEY_FILE must name the service's key file", file=sys.stderr)
        return 2
    key = key_file.read_text().strip()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from core.embedding import local_embedder_named, local_model_name

    workers = get_settings().embedding_service_workers or os.cpu_count() or 1
    # Load the model before the port opens: ready means ready to embed.
    local_embedder_named(local_model_name(), workers)
    import uvicorn

    uvicorn.run(create_app(key, workers), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
