"""The smoke client both air-gapped stack tests run inside the stack (as a container of the pod, or on the
compose network): `python smoke_client.py TOKEN API_URL DAGSTER_URL`. Not a test module: the tests pass its
text to the image's Python. It uploads a sample document through the API, waits for the daemon's ingestion
run, asks a chat question and checks the answer cites that document, checks the Dagster UI and /metrics,
and that an outside address cannot be reached. models_client.py imports its helpers."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
import uuid

H: dict[str, str] = {}


def call(method: str, url: str, body: bytes | None = None, ctype: str | None = None,
         auth: str | None = None) -> tuple[int, dict]:
    """`auth`: another bearer than the platform token (the LiteLLM proxy's key, models_client.py)."""
    headers = {"Authorization": "Bearer " + auth} if auth else dict(H)
    req = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - in-stack URL
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


def outside_blocked() -> None:
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=3)
        print("OUTSIDE REACHABLE")
        sys.exit(3)
    except OSError as exc:
        print("OUTSIDE BLOCKED", type(exc).__name__)


def ingest_sample(api: str) -> str:
    """Upload a sample document through the API and wait until the daemon's run has indexed it."""
    with open("/app/samples/qr-2026-044-weld-porosity.txt", "rb") as fh:
        data = fh.read()
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"qr-2026-044.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, doc = call("POST", api + "/v1/documents", body, ctype=f"multipart/form-data; boundary={boundary}")
    doc_id = doc["document_id"]
    print("UPLOADED", status, doc_id)
    deadline = time.time() + 900
    while True:
        _, d = call("GET", f"{api}/v1/documents/{doc_id}")
        if d["status"] in ("indexed", "failed", "rejected", "awaiting_approval"):
            break
        assert time.time() < deadline, d
        time.sleep(3)
    print("DOCUMENT", d["status"], doc_id)
    assert d["status"] == "indexed", d
    return str(doc_id)


QUESTION = json.dumps({"message": "What caused the weld porosity?"}).encode()


def main(token: str, api: str, dagster: str) -> None:
    H["Authorization"] = "Bearer " + token
    wait_ready(api + "/readyz")
    wait_ready(dagster + "/server_info")
    print("READY")
    outside_blocked()
    doc_id = ingest_sample(api)
    _, ans = call("POST", api + "/v1/chat", QUESTION, ctype="application/json")
    cited = {c["document_id"] for c in ans["citations"]}
    print("ANSWER", json.dumps({"answer": ans["answer"][:300], "cited": sorted(cited), "model": ans.get("model")}))
    assert doc_id in cited, ans
    with urllib.request.urlopen(dagster + "/server_info", timeout=30) as r:  # noqa: S310 - in-stack URL
        print("DAGSTER UI", r.status, json.loads(r.read()).get("dagster_webserver_version"))
    with urllib.request.urlopen(api + "/metrics", timeout=30) as r:  # noqa: S310 - in-stack URL
        assert b"eap_chat_answers_total" in r.read()
    print("SMOKE OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3].rstrip("/"))
