"""Rate limits are shared by every API process (issue 16): `eap serve api --workers 2` — two real uvicorn
worker processes — allows a user's budget once, not once per worker; a tenant's override
(tenant setting `rate_limit_per_minute`) caps the tenant. The JSON access log shows both workers served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db.database import system_session
from tests.builders import bearer, free_port

EAP = str(Path(sys.executable).parent / "eap")
USER_LIMIT = 3  # per minute: a token comes back every 20 s, far longer than one burst takes


@pytest.fixture(scope="module")
def two_workers(platform_db, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "api.log"
    env = dict(os.environ, EAP_RATE_LIMIT_USER_PER_MINUTE=str(USER_LIMIT), EAP_LOG_JSON="true",
               PROMETHEUS_MULTIPROC_DIR=str(log.parent / "prom"))
    with open(log, "wb") as fh:
        proc = subprocess.Popen([EAP, "serve", "api", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield base, log
    proc.terminate()
    proc.wait(60)


def _burst(base: str, headers_list: list[dict]) -> list[int]:
    def one(headers: dict) -> int:
        req = urllib.request.Request(  # noqa: S310 - loopback http only
            f"{base}/v1/search", data=json.dumps({"query": "hydraulic oil"}).encode(),
            headers={**headers, "Content-Type": "application/json", "Connection": "close"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback
                return r.status
        except urllib.error.HTTPError as e:
            assert e.code != 429 or e.headers["Retry-After"], "429 without Retry-After"
            return e.code

    with ThreadPoolExecutor(len(headers_list)) as pool:
        return list(pool.map(one, headers_list))


def _access_pids(log: Path) -> set[int]:
    pids = set()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec["logger"] == "uvicorn.access" and "/v1/search" in rec["msg"]:
                assert rec.get("request_id"), rec  # the access line carries the request's id
                pids.add(rec["pid"])
    return pids


def test_two_workers_share_one_user_budget(two_workers, make_tenant):
    base, log = two_workers
    t = make_tenant("rl")
    for attempt in range(4):  # the kernel spreads connections over the workers; retry until both served
        before = _search_requests(base)
        started = time.monotonic()
        codes = _burst(base, [bearer(t, f"burst-{attempt}")] * 12)
        took = time.monotonic() - started
        assert set(codes) <= {200, 429}, codes
        refills = int(took * USER_LIMIT / 60)  # tokens that came back while the burst ran
        assert USER_LIMIT <= codes.count(200) <= USER_LIMIT + refills, (codes, took)
        # /metrics (multi-process mode) counts the requests of both workers, whichever worker answers it.
        after = _search_requests(base)
        assert {k: after.get(k, 0) - before.get(k, 0) for k in after} == {
            "200": codes.count(200), "429": codes.count(429)}, (before, after)
        if len(_access_pids(log)) >= 2:
            break
    assert len(_access_pids(log)) == 2, "both worker processes should have served requests"


def _search_requests(base: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:  # noqa: S310 - loopback
        body = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for smp in fam.samples:
            if smp.name == "eap_http_requests_total" and smp.labels.get("route") == "/v1/search":
                out[smp.labels["status"]] = out.get(smp.labels["status"], 0) + smp.value
    return out


def test_tenant_override_caps_the_tenant_across_workers(two_workers, make_tenant):
    base, _ = two_workers
    t = make_tenant("rl")
    with system_session() as s:
        s.execute(text("UPDATE tenants SET settings = settings || '{\"rate_limit_per_minute\": 2}' WHERE id = :t"),
                  {"t": str(t.id)})
    codes = _burst(base, [bearer(t, f"user-{i}") for i in range(8)])  # 8 users, each within its own budget
    assert codes.count(200) == 2 and codes.count(429) == 6, codes
