"""The client of tests/deploy/test_compose_models.py, run inside the stack (a container on the compose network):
`python models_client.py TOKEN API_URL DAGSTER_URL PROXY_URL PROXY_KEY`. Not a test module: the test passes its
path to the image's Python. It checks the LiteLLM proxy (health without a key, 401 without one on the API, its
tier aliases with the key), that an outside address cannot be reached, uploads a sample document through the
API, waits for the daemon's ingestion run, asks a chat question and prints the answer with its trace and the
model lines of /metrics for the test to judge (the model behind the proxy writes whatever it writes)."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

token, API, DAGSTER, PROXY, KEY = sys.argv[1], *(u.rstrip("/") for u in sys.argv[2:5]), sys.argv[5]


def call(method: str, url: str, body: bytes | None = None, ctype: str | None = None,
         auth: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method,  # noqa: S310 - in-stack URL
                                 headers={"Authorization": "Bearer " + (auth or token)})
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=900) as r:  # noqa: S310 - in-stack URL
        return r.status, json.loads(r.read() or b"{}")


def wait_ready(url: str, limit: float = 900) -> None:
    """Services of the stack come up in any order (compose starts them without waiting)."""
    deadline = time.time() + limit
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):  # noqa: S310 - in-stack URL
                return
        except OSError as exc:
            assert time.time() < deadline, f"{url} not ready: {exc}"
            time.sleep(3)


wait_ready(PROXY + "/health/liveliness")
print("PROXY LIVE")
try:
    urllib.request.urlopen(PROXY + "/v1/models", timeout=30)  # noqa: S310 - in-stack URL
    print("PROXY OPEN")
    sys.exit(4)
except urllib.error.HTTPError as exc:
    print("PROXY WITHOUT KEY", exc.code)
_, models = call("GET", PROXY + "/v1/models", auth=KEY)
print("PROXY MODELS", json.dumps(sorted(m["id"] for m in models["data"])))
wait_ready(API + "/readyz")
wait_ready(DAGSTER + "/server_info")
print("READY")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    print("OUTSIDE REACHABLE")
    sys.exit(3)
except OSError as exc:
    print("OUTSIDE BLOCKED", type(exc).__name__)
with open("/app/samples/qr-2026-044-weld-porosity.txt", "rb") as fh:
    data = fh.read()
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"qr-2026-044.txt\"\r\n"
        "Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
status, doc = call("POST", API + "/v1/documents", body, ctype=f"multipart/form-data; boundary={boundary}")
doc_id = doc["document_id"]
print("UPLOADED", status, doc_id)
deadline = time.time() + 900
while True:
    _, d = call("GET", f"{API}/v1/documents/{doc_id}")
    if d["status"] in ("indexed", "failed", "rejected", "awaiting_approval"):
        break
    assert time.time() < deadline, d
    time.sleep(3)
print("DOCUMENT", d["status"], doc_id)
assert d["status"] == "indexed", d
question = json.dumps({"message": "What caused the weld porosity?"}).encode()
t0 = time.time()
_, ans = call("POST", API + "/v1/chat", question, ctype="application/json")
print("ANSWER", json.dumps({k: ans.get(k) for k in ("answer", "model", "model_tier", "outcome", "specialist",
                                                     "retrieval_notes", "trace_id")}))
print("CITED", json.dumps(sorted({c["document_id"] for c in ans["citations"]})))
print("GENERATE", json.dumps([st for st in ans["trace"] if st.get("step") == "THINK.generate"]))
print("CHAT SECONDS", round(time.time() - t0, 1))
# The first /metrics read of this API process: its aggregates are read now (later reads are cached ~10 s).
with urllib.request.urlopen(API + "/metrics", timeout=30) as r:  # noqa: S310 - in-stack URL
    for line in r.read().decode().splitlines():
        if line.startswith(("eap_model_tokens", "eap_chat_answers")):
            print("METRIC", line)
print("CLIENT DONE")
