"""`eap serve api` started before its database (compose starts every service at once; depends_on only orders
the starts) waits for it instead of exiting: eap.db.require_current(wait_s) retries until the database answers
at this release's migration, and still fails with the database's own error when the wait is over."""

from __future__ import annotations

import pytest

from core.errors import DatabaseUnavailable


def test_waits_until_the_database_answers_then_returns_its_real_status(platform_db, monkeypatch, capsys):
    import eap.db as db

    real, calls = db.status, []

    def status_down_twice() -> db.DbStatus:
        calls.append(1)
        if len(calls) <= 2:  # the database container is not up yet
            raise DatabaseUnavailable("cannot connect to PostgreSQL at db:5432: failed to resolve host 'db'")
        return real()  # then the session's real PostgreSQL, at head

    monkeypatch.setattr(db, "status", status_down_twice)
    monkeypatch.setattr("time.sleep", lambda s: None)
    st = db.require_current(wait_s=60)
    assert len(calls) == 3 and st.current and st.revision == st.head
    assert "waiting for the database" in capsys.readouterr().out


def test_without_a_wait_or_after_it_the_databases_error_stands(platform_db, monkeypatch):
    import eap.db as db

    calls = []

    def down() -> db.DbStatus:
        calls.append(1)
        raise DatabaseUnavailable("cannot connect to PostgreSQL at db:5432: connection refused")

    monkeypatch.setattr(db, "status", down)
    with pytest.raises(DatabaseUnavailable):
        db.require_current()
    assert len(calls) == 1  # no wait: one attempt, as before
    calls.clear()
    with pytest.raises(DatabaseUnavailable, match="connection refused"):
        db.require_current(wait_s=0.5)
    assert len(calls) >= 2  # retried within the wait, then the last error


def test_a_schema_behind_the_release_is_refused_once_the_wait_is_over(platform_db, monkeypatch):
    import eap.db as db

    behind = db.DbStatus("db:5432/eap", "0001", db.head_revision(), "0.8.0", "18.0")
    monkeypatch.setattr(db, "status", lambda: behind)
    with pytest.raises(db.NotMigrated, match="run `eap db upgrade` first"):
        db.require_current(wait_s=0.2)
