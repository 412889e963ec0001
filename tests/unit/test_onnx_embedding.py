"""The ONNX Runtime embedding path: exported offline from the shipped model files, vectors that agree with
the sentence-transformers path, and EAP_EMBEDDING_BACKEND choosing the backend (and the recorded name)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from core import embedding
from core.errors import ConfigurationError
from core.settings import get_settings

TEXTS = [
    "How do I set the default encoding when opening a file?",
    "asyncio.run() executes the coroutine and returns the result; it cannot be called when another "
    "event loop is running in the same thread.",
    "x",
    "The logging module defines functions and classes which implement a flexible event logging system "
    "for applications and libraries. " * 30,  # beyond 256 word pieces: truncated like torch's path
    "Überprüfen Sie die Konfiguration — naïve café résumé 日本語のテキスト",
    "",
]


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("onnx-home")
    old = os.environ.get("EAP_HOME")
    os.environ["EAP_HOME"] = str(home)
    get_settings.cache_clear()
    from core.onnx_embedding import ensure_exported

    ensure_exported(False)
    ensure_exported(True)
    yield home
    if old is None:
        os.environ.pop("EAP_HOME", None)
    else:
        os.environ["EAP_HOME"] = old
    get_settings.cache_clear()


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, onnx_home: Path) -> Iterator[Callable[[str], None]]:
    def _set(value: str) -> None:
        monkeypatch.setenv("EAP_EMBEDDING_BACKEND", value)
        get_settings.cache_clear()

    yield _set
    monkeypatch.delenv("EAP_EMBEDDING_BACKEND", raising=False)
    get_settings.cache_clear()


def test_export_is_offline_from_the_shipped_files(onnx_home: Path, network_attempts: list[str]) -> None:
    import onnx

    from core.onnx_embedding import ensure_exported, shipped_model_dir

    network_attempts.clear()
    (folder,) = (onnx_home / "models" / "onnx").iterdir()
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    assert json.loads((folder / "source.json").read_text())["model_dir"] == str(shipped_model_dir())
    graph = onnx.load(str(fp32)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["embedding"]
    # dynamic quantisation: int8 weights, about a quarter of the fp32 file
    assert int8.stat().st_size < fp32.stat().st_size / 2
    assert any(init.data_type == onnx.TensorProto.INT8 for init in onnx.load(str(int8)).graph.initializer)
    before = (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns)
    assert ensure_exported(True) == int8 and ensure_exported(False) == fp32  # cached: not exported again
    assert (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns) == before
    assert not [p for p in folder.iterdir() if p.name.startswith("tmp")]  # atomic: no leftovers
    assert network_attempts == []


def test_onnx_vectors_agree_with_torch(onnx_home: Path, network_attempts: list[str]) -> None:
    network_attempts.clear()
    ref = embedding.local_embedder("torch").embed(TEXTS)
    for backend_name, floor in (("onnx", 0.99), ("onnx-int8", 0.97)):
        emb = embedding.local_embedder(backend_name)
        got = emb.embed(TEXTS)
        assert got.shape == ref.shape == (len(TEXTS), 384)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
        cos = (got * ref).sum(axis=1)
        assert cos.min() >= floor, (backend_name, cos.round(4).tolist())
        # one text alone (no padding) agrees with the same text inside a padded batch (int8: activations are
        # quantised with the batch's range, so its figure moves a little with the batch)
        alone = float(emb.embed([TEXTS[1]])[0] @ got[1])
        assert alone > (0.9999 if backend_name == "onnx" else floor), alone
    fp32 = embedding.local_embedder("onnx").embed(TEXTS)
    assert float(((fp32 * ref).sum(axis=1)).min()) > 0.999  # fp32: the same vectors within rounding
    assert network_attempts == []


def test_small_length_sorted_batches_give_the_vectors_of_one_big_batch(onnx_home: Path) -> None:
    """The local backends embed BATCH_SIZE texts per pass, sorted by length (less padding: faster for a chat
    answer's candidate sentences); the vectors must be the ones a single padded batch gives, in the caller's
    order, for texts of every length across several batches."""
    texts = [f"{TEXTS[i % len(TEXTS)]} {' '.join(['word'] * (i * 7 % 90))} #{i}"
             for i in range(3 * embedding.BATCH_SIZE + 5)]
    for backend_name in ("torch", "onnx"):
        emb = embedding.local_embedder(backend_name)
        assert emb.batch_size == embedding.BATCH_SIZE < len(texts)  # type: ignore[attr-defined]
        small = emb.embed(texts)
        emb.batch_size = len(texts)  # type: ignore[attr-defined]
        try:
            one = emb.embed(texts)
        finally:
            emb.batch_size = embedding.BATCH_SIZE  # type: ignore[attr-defined]
        cos = (small * one).sum(axis=1)
        assert cos.min() > 0.9999, (backend_name, cos.round(5).tolist())
        # and in the caller's order: each row is its own text's vector, not a neighbour's
        assert float((small[:-1] * one[1:]).sum(axis=1).max()) < 0.9999


def test_the_setting_selects_the_backend_and_the_recorded_name(backend: Callable[[str], None], onnx_home: Path) -> None:
    from core.onnx_embedding import OnnxEmbedder
    from retrieval.versions import BuildConfig

    backend("onnx-int8")
    emb = embedding.get_embedder()
    assert isinstance(emb, OnnxEmbedder) and emb.quantized and emb.name == embedding.LOCAL_INT8_NAME
    assert emb.model_path.parent.parent == onnx_home / "models" / "onnx"
    assert BuildConfig.desired().embedding_model == embedding.LOCAL_INT8_NAME  # a rebuild records int8
    # strict per index: an fp32-built index is still queried with fp32 vectors, an int8 one with int8
    fp32_index = embedding.named_embedder(embedding.LOCAL_MODEL_NAME)
    assert isinstance(fp32_index, OnnxEmbedder) and not fp32_index.quantized
    assert fp32_index.name == embedding.LOCAL_MODEL_NAME
    assert embedding.named_embedder(embedding.LOCAL_INT8_NAME) is emb

    backend("onnx")
    emb = embedding.get_embedder()
    assert isinstance(emb, OnnxEmbedder) and not emb.quantized and emb.name == embedding.LOCAL_MODEL_NAME
    assert BuildConfig.desired().embedding_model == embedding.LOCAL_MODEL_NAME

    backend("torch")
    emb = embedding.get_embedder()
    assert isinstance(emb, embedding.LocalEmbedder)
    assert isinstance(embedding.named_embedder(embedding.LOCAL_INT8_NAME), OnnxEmbedder)  # int8 index stays int8

    backend("tensorrt")
    with pytest.raises(ConfigurationError, match="embedding_backend"):
        get_settings()


def test_parallel_passes_give_the_vectors_of_one_pass_at_a_time(onnx_home: Path) -> None:
    """The embedding service runs one forward pass per core (workers=N, one thread each): the batches run
    concurrently and land in the caller's order, with the vectors of the one-pass-at-a-time embedder."""
    import torch

    from core.onnx_embedding import OnnxEmbedder

    texts = [f"{TEXTS[i % len(TEXTS)]} {' '.join(['bolt'] * (i * 11 % 70))} #{i}"
             for i in range(4 * embedding.BATCH_SIZE + 3)]
    threads = torch.get_num_threads()
    try:
        pairs = [(embedding.local_embedder("torch"), embedding.LocalEmbedder(workers=2)),
                 (embedding.local_embedder("onnx"), OnnxEmbedder(embedding.LOCAL_MODEL_NAME, False, workers=2))]
        assert torch.get_num_threads() == 1  # the pooled torch embedder's passes use one thread each
        for serial, pooled in pairs:
            assert pooled._pool is not None and serial._pool is None  # type: ignore[attr-defined]
            a, b = serial.embed(texts), pooled.embed(texts)
            cos = (a * b).sum(axis=1)
            assert cos.min() > 0.9999, cos.round(5).tolist()
            assert float((a[:-1] * b[1:]).sum(axis=1).max()) < 0.9999  # each row is its own text's vector
    finally:
        torch.set_num_threads(threads)
