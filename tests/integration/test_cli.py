"""The `eap` command as a user runs it: a subprocess, real database, one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from core.db.database import get_urls
from core.security import verify_token
from core.settings import get_settings

EAP = str(Path(sys.executable).parent / "eap")


def run_eap(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    e = os.environ.copy()
    e.update(env or {})
    return subprocess.run([EAP, *args], capture_output=True, text=True, timeout=timeout, env=e)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("{")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("eap: error: ")
    return lines[0]


def test_tenant_create_is_idempotent_and_token_works(platform_db):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    r1 = run_eap("tenant", "create", name)
    assert r1.returncode == 0, r1.stderr
    assert f"tenant {name} created" in r1.stdout
    r2 = run_eap("tenant", "create", name)
    assert r2.returncode == 0 and f"tenant {name} exists" in r2.stdout
    assert r1.stdout.split("id=")[1] == r2.stdout.split("id=")[1]

    r = run_eap("token", "--tenant", name, "--role", "operator", "--user", "olga", "--groups", "qa, maint")
    assert r.returncode == 0, r.stderr
    p = verify_token(get_settings(), r.stdout.strip())
    assert (p.subject, p.tenant, p.role.value, p.groups) == ("olga", name, "operator", ("qa", "maint"))
    assert str(p.tenant_id) == r1.stdout.split("id=")[1].strip()


def test_token_for_unknown_tenant_is_a_one_line_error(platform_db):
    line = _one_line_error(run_eap("token", "--tenant", "no-such-tenant", "--role", "admin"))
    assert "does not exist" in line


def test_invalid_tenant_name(platform_db):
    assert "invalid" in _one_line_error(run_eap("tenant", "create", "Bad Name!"))


def test_unreachable_database_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        r = run_eap("db", "upgrade", env={"DATABASE_URL": f"postgresql://eap:s3cret@127.0.0.1:{port}/eap"})
    line = _one_line_error(r)
    assert f"cannot connect to PostgreSQL at postgresql+psycopg://eap:***@127.0.0.1:{port}/eap" in line
    assert "s3cret" not in r.stderr


def test_server_where_pgvector_cannot_be_enabled(platform_db):
    """A database without the vector extension, reached by a role that may not create it."""
    suffix = uuid.uuid4().hex[:8]
    role, db = f"limited_{suffix}", f"novec_{suffix}"
    admin = sa.create_engine(get_urls().maintenance, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN CREATEROLE CREATEDB"))
        conn.execute(text(f"CREATE DATABASE {db} OWNER {role}"))
    admin.dispose()
    url = sa.engine.make_url(get_urls().admin).set(username=role, database=db, drivername="postgresql")
    r = run_eap(
        "db", "upgrade",
        env={"DATABASE_URL": url.render_as_string(hide_password=False),
             "EAP_OWNER_DB_ROLE": f"o_{suffix}", "EAP_APP_DB_ROLE": f"a_{suffix}", "EAP_APP_DB_PASSWORD": "pw"},
    )
    line = _one_line_error(r)
    assert "pgvector" in line and db in line


def test_prod_without_secret_is_a_one_line_error():
    line = _one_line_error(run_eap("db", "upgrade", env={"EAP_ENV": "prod"}))
    assert "EAP_JWT_SECRET" in line


@pytest.mark.parametrize("flag", ["--api-port", "--dagster-port"])
def test_port_in_use(flag, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_eap("up", flag, str(port), env={"EAP_HOME": str(tmp_path)}, timeout=60)
    line = _one_line_error(r)
    assert f"port {port} on 127.0.0.1 is already in use" in line and flag in line
    assert not (tmp_path / "pgdata").exists()  # refused before anything was started
