"""Production mode of the CLI (issue 16, item 1), as an operator runs it: real `eap` subprocesses, a real
PostgreSQL, real HTTP.

- a fresh checkout's `eap up` keeps all its state under ./.eap, never in $HOME (the EAP_HOME alias bug);
- `EAP_ENV=prod eap up` seeds no sample documents and prints no token; `eap seed --samples` is the
  explicit step that does; `eap db check` reports the migrated database;
- services refuse missing or placeholder secrets with one line.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.builders import free_port, http_get

EAP = str(Path(sys.executable).parent / "eap")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class Up:
    """`eap up` in a subprocess; `ready` is set once it printed its "is up" banner (or exited)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.api_port, self.dagster_port = free_port(), free_port()
        self.proc = subprocess.Popen([EAP, "up", "--api-port", str(self.api_port), "--dagster-port",
                                      str(self.dagster_port)], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("Press Ctrl-C to stop."):
                self.ready.set()
        self.ready.set()

    def wait_up(self, timeout: float = 240) -> str:
        assert self.ready.wait(timeout), "eap up not ready in time:\n" + "\n".join(self.lines)
        assert "Press Ctrl-C to stop." in self.lines, "eap up exited:\n" + "\n".join(self.lines)
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("EAP_HOME", "DATABASE_URL", "EAP_DATABASE_URL", "EAP_APP_DATABASE_URL", "EAP_ENV",
                        "EAP_JWT_SECRET", "EAP_JWT_SECRET_FILE", "EAP_SYSTEM_DATABASE_URL", "DAGSTER_HOME")}
    env.update(extra)
    return env


def test_fresh_checkout_eap_up_keeps_state_under_dot_eap(tmp_path):
    """As a new user: HOME is their (empty) home directory, EAP_HOME unset, `eap up` run in the checkout."""
    home, checkout = tmp_path / "home", tmp_path / "checkout"
    home.mkdir()
    checkout.mkdir()
    up = Up(_clean_env(HOME=str(home), EAP_ENV="dev"), cwd=checkout)
    try:
        out = up.wait_up()
        assert f"EAP_HOME={checkout / '.eap'}" in out
        assert "EAP_ADMIN_TOKEN=" in out  # dev mode still prints the token
        status, _ = http_get(f"http://127.0.0.1:{up.api_port}/readyz")
        assert status == 200
    finally:
        up.stop()
    state = checkout / ".eap"
    for sub in ("pgdata", "secrets", "dagster_home", "logs", "files"):
        assert (state / sub).exists() or sub == "files", sorted(p.name for p in state.iterdir())
    assert (state / "secrets" / "jwt_secret").is_file()
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"eap up wrote into $HOME: {written[:20]}"


@pytest.fixture
def prod_db(platform_db):
    """A database of its own on the session's PostgreSQL server, reached through DATABASE_URL as an external
    server would be (the embedded server listens on a unix socket)."""
    name = f"eapprod_{uuid.uuid4().hex[:8]}"
    admin = make_url(platform_db.admin).set(drivername="postgresql", database=name)
    eng = sa.create_engine(platform_db.maintenance, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:  # the site's DBA creates the (empty) database; `eap` does the rest
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield name, admin.render_as_string(hide_password=False)
    with eng.connect() as conn:
        for db in (name, f"{name}_dagster"):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    eng.dispose()


def test_prod_up_seeds_nothing_prints_no_token_and_seed_is_explicit(tmp_path, prod_db, platform_db):
    name, url = prod_db
    env = _clean_env(EAP_ENV="prod", EAP_HOME=str(tmp_path / "state"), DATABASE_URL=url, EAP_DB_NAME=name,
                     EAP_JWT_SECRET=secrets.token_urlsafe(40), EAP_APP_DB_PASSWORD=secrets.token_urlsafe(24))
    up = Up(env, cwd=tmp_path)
    try:
        out = up.wait_up()
        assert "EAP_ADMIN_TOKEN" not in out and "eyJ" not in out, out
        assert "sample documents" not in out
        status, _ = http_get(f"http://127.0.0.1:{up.api_port}/readyz")
        assert status == 200
    finally:
        up.stop()

    check = subprocess.run([EAP, "db", "check"], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "pgvector 0." in check.stdout and "migration" in check.stdout

    def documents() -> int:
        eng = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
        try:
            with eng.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM documents")).scalar_one()
        finally:
            eng.dispose()

    assert documents() == 0  # prod `eap up` created the tenant but submitted nothing
    seed = subprocess.run([EAP, "seed", "--samples"], env=env, capture_output=True, text=True, timeout=300)
    assert seed.returncode == 0, seed.stderr
    assert "tenant default exists" in seed.stdout
    assert documents() == len([p for p in (REPO / "samples").glob("*.*") if p.is_file()]) > 0
    again = subprocess.run([EAP, "seed"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "sample documents" not in again.stdout


@pytest.mark.parametrize("overrides, expected", [
    ({}, "EAP_JWT_SECRET"),
    ({"EAP_JWT_SECRET": "change-me"}, "EAP_JWT_SECRET"),
    ({"EAP_JWT_SECRET": "k" * 40, "EAP_APP_DB_PASSWORD": "changeme"}, "EAP_APP_DB_PASSWORD"),
    ({"EAP_JWT_SECRET": "k" * 40, "EAP_APP_DB_PASSWORD": "p-" + "q" * 20,
      "DATABASE_URL": "postgresql://eap:postgres@127.0.0.1:1/eap"}, "DATABASE_URL"),
])
def test_prod_services_refuse_missing_or_default_secrets(tmp_path, overrides, expected):
    env = _clean_env(**{"EAP_ENV": "prod", "EAP_HOME": str(tmp_path),
                        "DATABASE_URL": "postgresql://eap:Zq81vv@127.0.0.1:1/eap",
                        "EAP_APP_DB_PASSWORD": "p-" + "q" * 20, **overrides})
    for component in ("api", "dagster-daemon"):
        started = time.monotonic()
        r = subprocess.run([EAP, "serve", component, "--port", str(free_port())] if component == "api"
                           else [EAP, "serve", component], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("{")]
        assert len(lines) == 1 and lines[0].startswith("eap: error: ") and expected in lines[0], r.stderr
        assert "Traceback" not in r.stderr and time.monotonic() - started < 30
