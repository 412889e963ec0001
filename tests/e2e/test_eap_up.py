"""`eap up` exactly as the README runs it: real processes, real ports, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EAP = str(Path(sys.executable).parent / "eap")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(  # noqa: S310 - loopback http only (asserted above)
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Instance:
    def __init__(self, home: Path, *extra: str):
        self.home = home
        self.api_port, self.dagster_port = _free_port(), _free_port()
        env = os.environ.copy()
        env["EAP_HOME"] = str(home)
        self.proc = subprocess.Popen(
            [EAP, "up", "--api-port", str(self.api_port), "--dagster-port", str(self.dagster_port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: list[str] = []
        self.token: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("EAP_ADMIN_TOKEN="):
                self.token = line.split("=", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=240):
        assert self._ready.wait(timeout), "eap up did not print a token in time:\n" + "\n".join(self.lines)
        assert self.token, "eap up exited before becoming ready:\n" + "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


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
            assert _get(f"{api}/healthz")[0] == 200
            status, body = _get(f"{api}/readyz")
            assert status == 200, body
            status, body = _get(f"http://127.0.0.1:{inst.dagster_port}/")
            assert status == 200 and b"<html" in body.lower()
            status, body = _get(f"http://127.0.0.1:{inst.dagster_port}/server_info")
            assert status == 200 and "dagster_webserver_version" in json.loads(body)
            status, body = _get(f"{api}/v1/me", inst.token)
            assert status == 200, body
            assert json.loads(body)["role"] == "admin" and json.loads(body)["tenant"] == "default"
            assert (inst.home / "dagster_home" / "dagster.yaml").exists()
        # Separate EAP_HOMEs are separate platforms: one's token means nothing to the other.
        status, body = _get(f"http://127.0.0.1:{b.api_port}/v1/me", a.token)
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_token"
    finally:
        rc_a, rc_b = a.stop(), b.stop()
    assert (rc_a, rc_b) == (0, 0), "\n".join(a.lines[-20:] + b.lines[-20:])
    for inst in (a, b):
        assert _port_closed(inst.api_port) and _port_closed(inst.dagster_port)
        assert not (inst.home / "pgdata" / "postmaster.pid").exists(), "embedded PostgreSQL still running"
        assert any(line.startswith("stopped") for line in inst.lines)


def test_restart_reuses_the_database(tmp_path):
    first = Instance(tmp_path)
    first.wait_ready()
    assert first.stop() == 0
    second = Instance(tmp_path, "--mes-simulator")
    try:
        second.wait_ready()
        status, body = _get(f"http://127.0.0.1:{second.api_port}/v1/me", second.token)
        assert status == 200
        status, mes = _get(f"http://127.0.0.1:{second.api_port}/v1/integrations/mes", second.token)
        sim_url = json.loads(mes)["mes"]["base_url"]
        status_sim, machines = _get(f"{sim_url}/api/v1/machines")
        assert status_sim == 200 and len(json.loads(machines)["machines"]) == 9
        # Same tenant row: the data folder was reused, not re-initialised.
        assert json.loads(body)["tenant_id"] in "\n".join(first.lines)
    finally:
        assert second.stop() == 0
