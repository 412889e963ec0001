"""Dagster run workers and the database: a run never bootstraps (no DDL, no GRANT in resource setup), so
several step processes starting at once cannot collide; a run that finds the schema behind the code fails
at once with what to do."""

import subprocess
import sys

import dagster as dg
import pytest
from sqlalchemy import text

# What a run worker does when it initialises the `db` resource, in a process of its own (as the daemon's
# run workers and a multiprocess executor's step processes do).
_WORKER = """
import dagster as dg
from assets.resources import PlatformDatabase
PlatformDatabase().setup_for_execution(dg.build_init_resource_context())
print("ready")
"""


def test_concurrent_run_workers_initialise_without_colliding(platform_db):
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().endswith("ready")


def test_resource_setup_does_not_take_the_bootstrap_path(platform_db):
    """While something else bootstraps (holding the bootstrap lock), a run worker still starts: its setup
    reads the schema version and nothing else (a bootstrap would wait for the lock until the timeout)."""
    from core.db import database

    # The lock lives on the maintenance database, where bootstrap takes it.
    with database._connect_autocommit(database.get_urls().maintenance) as lock:
        lock.execute(text("SELECT pg_advisory_lock(hashtextextended('eap:bootstrap', 0))"))
        try:
            p = subprocess.run([sys.executable, "-c", _WORKER], capture_output=True, text=True, timeout=120)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(hashtextextended('eap:bootstrap', 0))"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().endswith("ready")


def test_a_run_on_a_schema_behind_the_code_says_what_to_do(platform_db):
    from assets.resources import PlatformDatabase
    from core.db.database import system_session

    with system_session() as s:
        head = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
        s.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        with pytest.raises(dg.Failure, match=r"schema at 0001, expected .*eap db upgrade"):
            PlatformDatabase().setup_for_execution(dg.build_init_resource_context())
    finally:
        with system_session() as s:
            s.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
    PlatformDatabase().setup_for_execution(dg.build_init_resource_context())
