"""`eap up` exactly as the README runs it: real processes, real ports, real HTTP."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from tests.builders import Instance, http_get

pytestmark = pytest.mark.slow
def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_two_instances_side_by_side_then_clean_shutdown(tmp_path):
    a, b = Instance(tmp_path / "a"), Instance(tmp_path / "b")
    try:
        a.wait_ready()
        b.wait_ready()
        for inst in (a, b):
            api = f"http://127.0.0.1:{inst.api_port}"
            assert http_get(f"{api}/healthz")[0] == 200
            status, body = http_get(f"{api}/readyz")
            assert status == 200, body
            status, body = http_get(f"http://127.0.0.1:{inst.dagster_port}/")
            assert status == 200 and b"<html" in body.lower()
            status, body = http_get(f"http://127.0.0.1:{inst.dagster_port}/server_info")
            assert status == 200 and "dagster_webserver_version" in json.loads(body)
            status, body = http_get(f"{api}/v1/me", inst.token)
            assert status == 200, body
            assert json.loads(body)["role"] == "admin" and json.loads(body)["tenant"] == "default"
            assert (inst.home / "dagster_home" / "dagster.yaml").exists()
        _samples_embedded_by_the_service(a)
        # Separate EAP_HOMEs are separate platforms: one's token means nothing to the other.
        status, body = http_get(f"http://127.0.0.1:{b.api_port}/v1/me", a.token)
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_token"
    finally:
        rc_a, rc_b = a.stop(), b.stop()
    assert (rc_a, rc_b) == (0, 0), "\n".join(a.lines[-20:] + b.lines[-20:])
    for inst in (a, b):
        assert _port_closed(inst.api_port) and _port_closed(inst.dagster_port)
        # The embedded server stops when its last handle goes; a run worker the daemon started may still be
        # finishing its step under load (it holds one), so allow it a minute.
        pid_file, deadline = inst.home / "pgdata" / "postmaster.pid", time.monotonic() + 60
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not pid_file.exists(), "embedded PostgreSQL still running"
        assert any(line.startswith("stopped") for line in inst.lines)


def _samples_embedded_by_the_service(inst: Instance) -> None:
    """The sample documents `eap up` submits are ingested by daemon-launched runs that embed through the
    long-lived embedding process (eap/embedding_service.py), read from the run's metadata in Dagster's GraphQL."""
    api, deadline = f"http://127.0.0.1:{inst.api_port}", time.monotonic() + 240
    while True:
        docs = json.loads(http_get(f"{api}/v1/documents", inst.token)[1])["items"]
        if docs and all(d["status"] == "indexed" for d in docs):
            break
        assert time.monotonic() < deadline, [d["status"] for d in docs]
        time.sleep(1)
    query = ('{ assetOrError(assetKey: {path: ["document_embeddings"]}) { ... on Asset { assetMaterializations('
             'limit: 1) { metadataEntries { label ... on BoolMetadataEntry { boolValue } '
             '... on IntMetadataEntry { intValue } } } } } }')
    # A run indexes each slice of its documents as soon as it is embedded: the documents can be indexed a
    # moment before the run's step ends and Dagster records the materializations.
    while True:
        req = urllib.request.Request(f"http://127.0.0.1:{inst.dagster_port}/graphql", method="POST",
                                     data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback URL built here
            mats = json.loads(r.read())["data"]["assetOrError"]["assetMaterializations"]
        if mats:
            break
        assert time.monotonic() < deadline, "no document_embeddings materialization recorded"
        time.sleep(1)
    meta = {e["label"]: e.get("boolValue", e.get("intValue")) for e in mats[0]["metadataEntries"]}
    assert meta["embedding_service"] is True and meta["embedding_fallbacks"] == 0, meta
    assert (inst.home / "logs" / "embedding-service.log").exists()


def test_restart_reuses_the_database(tmp_path):
    first = Instance(tmp_path)
    first.wait_ready()
    assert first.stop() == 0
    second = Instance(tmp_path, "--mes-simulator")
    try:
        second.wait_ready()
        status, body = http_get(f"http://127.0.0.1:{second.api_port}/v1/me", second.token)
        assert status == 200
        status, mes = http_get(f"http://127.0.0.1:{second.api_port}/v1/integrations/mes", second.token)
        sim_url = json.loads(mes)["mes"]["base_url"]
        status_sim, machines = http_get(f"{sim_url}/api/v1/machines")
        assert status_sim == 200 and len(json.loads(machines)["machines"]) == 9
        # Same tenant row: the data folder was reused, not re-initialised.
        assert json.loads(body)["tenant_id"] in "\n".join(first.lines)
    finally:
        assert second.stop() == 0
