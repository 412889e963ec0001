"""`eap up`'s long-lived embedding process (eap/embedding_service.py), run for real as a subprocess on loopback:
it refuses what it must, its vectors are the in-process model's (so indexes built either way are
interchangeable), a run whose service is gone still embeds, and an ingest run given the service embeds there."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.builders import free_port, settings_env, upload_file

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Autovacuum naptime defaults to one minute.", "x",
         "The checkpoint_timeout parameter sets the maximum time between automatic WAL checkpoints " * 6,
         "Press P3 hydraulic oil: ISO VG 46.", "Ein kurzer deutscher Satz."]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("svc") / "embedding_service.key"
    key_file.write_text("k-" + "s" * 40)
    key_file.chmod(0o600)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "eap.embedding_service", "--port", str(port)], cwd=ROOT,
                            env={**_env(), "EAP_EMBEDDING_SERVICE_KEY_FILE": str(key_file)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - loopback URL built here
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "embedding service did not come up"
        time.sleep(0.3)
    yield url, key_file
    proc.terminate()
    proc.wait(20)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("EAP_EMBEDDING_SERVICE")}


def _post(url: str, body: object, key: str | None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/v1/embeddings", data=data, method="POST",  # noqa: S310 - loopback URL built here
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback URL built here
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_refuses_unauthenticated_unknown_models_and_bad_input(service):
    url, key_file = service
    key = key_file.read_text()
    assert _post(url, {"model": "local", "input": ["a"]}, None)[0] == 401
    assert _post(url, {"model": "local", "input": ["a"]}, key + "x")[0] == 401
    status, body = _post(url, {"model": "gpt-4o", "input": ["a"]}, key)
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    for bad in ({"model": "local", "input": []}, {"model": "local", "input": [1, 2]},
                {"model": "local"}, [1, 2], b"{not json"):
        status, body = _post(url, bad, key)
        assert status == 422, (bad, status, body)
    status, body = _post(url, {"model": "local", "input": ["a", "b"]}, key)
    assert status == 200 and [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 384
    # OpenAI's encoding_format: base64 is the same vector as float32 bytes; anything else is refused.
    status, packed = _post(url, {"model": "local", "input": ["a", "b"], "encoding_format": "base64"}, key)
    assert status == 200
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]]
    assert np.abs(np.array(decoded) - np.array([d["embedding"] for d in body["data"]])).max() < 1e-6
    status, bad = _post(url, {"model": "local", "input": ["a"], "encoding_format": "int8"}, key)
    assert (status, bad["error"]["code"]) == (422, "invalid_input")


def test_vectors_are_the_in_process_models_in_the_callers_order(service, monkeypatch):
    import core.embedding as embedding
    from core.embedding import LOCAL_MODEL_NAME, ServiceEmbedder, local_embedder

    url, key_file = service
    remote = ServiceEmbedder(LOCAL_MODEL_NAME, url, key_file.read_text())
    received, decode = [], embedding._vector
    monkeypatch.setattr(embedding, "_vector", lambda e: received.append(type(e)) or decode(e))
    got = remote.embed(TEXTS)  # mixed lengths: sent sorted by length, returned in this order
    assert received and set(received) == {str}  # through LiteLLM as float32 bytes (base64), not JSON numbers
    want = local_embedder("torch").embed(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384)
    assert np.abs(got - want).max() < 1e-5
    assert remote.fallbacks == 0 and remote.name == LOCAL_MODEL_NAME


def test_a_run_whose_service_is_gone_embeds_in_its_own_process():
    from core.embedding import LOCAL_MODEL_NAME, ServiceEmbedder, local_embedder

    gone = ServiceEmbedder(LOCAL_MODEL_NAME, f"http://127.0.0.1:{free_port()}", "k")
    got = gone.embed(TEXTS[:2])
    assert gone.fallbacks == 1
    assert np.abs(got - local_embedder("torch").embed(TEXTS[:2])).max() < 1e-5


def test_an_ingest_run_given_the_service_embeds_there(service, dagster_env, client, make_tenant):
    import dagster as dg

    url, key_file = service
    inst, run_pipeline, _ = dagster_env
    t = make_tenant("embsvc")
    r = upload_file(client, t, "press-p3.md", b"# Press P3\n\nHydraulic oil ISO VG 46, changed every 2000 h.\n",
                    classification="I")
    assert r.status_code == 202, r.text
    with settings_env({"EAP_EMBEDDING_SERVICE_URL": url, "EAP_EMBEDDING_SERVICE_KEY_FILE": str(key_file)}):
        results = run_pipeline()
    assert results and all(res.success for res in results)
    mats = [e.event_specific_data.materialization for res in results for e in res.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("document_embeddings")]
    assert mats, "no document_embeddings materialization"
    meta = mats[-1].metadata
    assert meta["embedding_service"].value is True and meta["embedding_fallbacks"].value == 0
    status = client.get(f"/v1/documents/{r.json()['document_id']}", headers=_admin(t)).json()["status"]
    assert status == "indexed"


def _admin(t) -> dict:
    from tests.builders import upload_headers

    return upload_headers(t)
