"""The client of tests/deploy/test_compose_models.py, run inside the stack (a container on the compose network):
`python models_client.py TOKEN API_URL DAGSTER_URL PROXY_URL PROXY_KEY`. Not a test module: the test passes its
path to the image's Python. It checks the LiteLLM proxy (health without a key, 401 without one on the API, its
tier aliases with the key), that an outside address cannot be reached, uploads a sample document through the
API, waits for the daemon's ingestion run, asks a chat question and prints the answer with its trace and the
model lines of /metrics for the test to judge (the model behind the proxy writes whatever it writes)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from smoke_client import QUESTION, H, call, ingest_sample, outside_blocked, wait_ready  # mounted next to this file

token, API, DAGSTER, PROXY, KEY = sys.argv[1], *(u.rstrip("/") for u in sys.argv[2:5]), sys.argv[5]
H["Authorization"] = "Bearer " + token

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
outside_blocked()
ingest_sample(API)
question = QUESTION
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
