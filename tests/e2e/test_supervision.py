"""`eap up` supervises its children (security issue 12, findings 5, 11 and 12): a killed API comes
back, a second `eap up` on the same EAP_HOME is refused, and the API process's environment holds
neither a superuser database URL nor the signing key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.builders import EAP, Instance, free_port, http_get

pytestmark = pytest.mark.slow


def _api_pid(port: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"serving.app:create_app" in argv and str(port).encode() in argv:
            return int(entry)
    return None


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [p.split(b"=", 1) for p in fh.read().split(b"\0") if b"=" in p]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def _up(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:  # refused while the API restarts
        return False


def _post(url: str, body: dict) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=json.dumps(body).encode(),  # noqa: S310 - loopback only
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_killed_api_comes_back_second_up_refused_and_api_env_holds_no_secrets(tmp_path):
    inst = Instance(tmp_path)
    try:
        inst.wait_ready()
        api = f"http://127.0.0.1:{inst.api_port}"
        pid = _api_pid(inst.api_port)
        assert pid, "uvicorn process not found"

        # Least privilege (finding 11): no superuser URL, no signing key in the API's environment.
        env = _environ(pid)
        key = (tmp_path / "secrets" / "jwt_secret").read_text().strip()
        assert all(key not in v for v in env.values())
        for name in ("DATABASE_URL", "EAP_DATABASE_URL", "EAP_JWT_SECRET", "EAP_DAGSTER_PG_URL",
                     "EAP_DAGSTER_DATABASE_URL"):
            assert name not in env, name
        urls = {k: v for k, v in env.items() if "://" in v and v.startswith("postgres")}
        assert {urlsplit(v).username for v in urls.values()} == {"eap_app", "eap_system"}, urls
        key_file = env["EAP_JWT_SECRET_FILE"]
        assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
        # …and the API still works: tokens, tenant lookups and logins (which use the system role).
        assert http_get(f"{api}/v1/me", inst.token)[0] == 200
        status, body = _post(f"{api}/v1/auth/login", {"tenant": "default", "username": "admin", "password": "x" * 12})
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_credentials"

        # Finding 12: a second `eap up` on the same EAP_HOME is refused with one line.
        env2 = {**os.environ, "EAP_HOME": str(tmp_path)}
        second = subprocess.run([EAP, "up", "--api-port", str(free_port()), "--dagster-port", str(free_port())],
                                env=env2, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert "already running" in second.stderr

        # Finding 5: kill -9 the API; the supervisor restarts it, the rest keeps running.
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 180
        new_pid = None
        while time.monotonic() < deadline:
            new_pid = _api_pid(inst.api_port)
            if new_pid and new_pid != pid and _up(f"{api}/healthz"):
                break
            time.sleep(1)
        assert new_pid and new_pid != pid, "\n".join(inst.lines[-20:])
        assert http_get(f"{api}/v1/me", inst.token)[0] == 200
        assert http_get(f"{api}/readyz")[0] == 200
        assert http_get(f"http://127.0.0.1:{inst.dagster_port}/server_info")[0] == 200
        assert inst.proc.poll() is None
        assert any("api exited" in line and "restarting" in line for line in inst.lines), inst.lines[-20:]
    finally:
        rc = inst.stop()
    assert rc == 0, "\n".join(inst.lines[-30:])
    assert any(line.startswith("stopped") for line in inst.lines)
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
