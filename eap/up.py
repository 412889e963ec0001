"""`eap up`: one command from a fresh clone to a running platform.

Order: check ports → database (embedded or DATABASE_URL) → migrations → default tenant + admin →
$DAGSTER_HOME → Dagster webserver, Dagster daemon, API (uvicorn) as child processes → wait until
each answers → print URLs and a dev admin token → supervise (a crashed child is restarted with
exponential backoff; one that keeps crashing ends the platform loudly) until Ctrl-C/SIGTERM, then stop
every child (SIGTERM, then SIGKILL after a grace period) and release the embedded database. One
`eap up` per EAP_HOME (a lock file). The API gets no superuser URL and no signing key in its
environment. (Slightly over 400 lines: start-up, supervision and shutdown share the child table and
must be read together.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from core.errors import ConfigurationError, PlatformError

if TYPE_CHECKING:  # imported lazily at run time: the supervisor stays light
    from core.db.database import DatabaseUrls
    from core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 15.0
# Niceness of the Dagster code server and so of every run worker it starts (see run_up): on a small host the
# embedding of ingestion is the bottleneck, and the embedding process keeps the normal priority.
RUN_NICENESS = 10


class PortInUse(ConfigurationError):
    code = "port_in_use"


class ChildFailed(PlatformError):
    code = "child_failed"


def ensure_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a socket in TIME_WAIT is not "in use"; a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUse(f"port {port} on {host} is already in use; choose another with {flag}") from None


class AlreadyRunning(ConfigurationError):
    code = "already_running"


def acquire_home_lock(home: Path) -> TextIO:  # an open file whose lock lives as long as it does
    """One `eap up` per EAP_HOME: an exclusive, non-blocking flock on EAP_HOME/eap-up.lock, held for the
    process's lifetime (the kernel releases it however the process ends, so a crash leaves no stale lock)."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fh = open(home / "eap-up.lock", "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise AlreadyRunning(f"`eap up` is already running on EAP_HOME {home} ({holder}); stop it first or "
                             "use another EAP_HOME") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


# Supervision: a child that dies is restarted after 1, 2, 4 … (at most 30) seconds; more than
# MAX_RESTARTS restarts of one child within RESTART_WINDOW_S means it cannot stay up: give up loudly.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    cmd: list[str] | None = None
    env: dict[str, str] | None = None
    restarts: list[float] | None = None  # monotonic times of recent restarts
    restart_at: float | None = None  # pending restart (after a crash)

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> Child:
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    fh = open(log_path, "ab")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: we stop it, a terminal's ^C does not race us
    )
    fh.close()
    return Child(name, proc, log_path, cmd, env, [])


def _supervise(children: list[Child], logs: Path, now: float) -> None:
    """Restart crashed children with exponential backoff; raise ChildFailed when one keeps crashing."""
    for i, c in enumerate(children):
        if c.restart_at is None:
            if c.proc.poll() is None:
                continue
            recent = [t for t in (c.restarts or []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                raise ChildFailed(
                    f"{c.name} exited with code {c.proc.returncode} and was restarted {len(recent)} times in "
                    f"{RESTART_WINDOW_S:.0f}s; giving up. Last log lines ({c.log_path}):\n{c.tail()}"
                )
            delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** len(recent))
            c.restarts, c.restart_at = recent, now + delay
            _stop([c])  # whatever the dead child left in its process group
            print(f"eap: {c.name} exited with code {c.proc.returncode}; restarting in {delay:.0f}s "
                  f"(restart {len(recent) + 1} of at most {MAX_RESTARTS} in {RESTART_WINDOW_S:.0f}s; "
                  f"log {c.log_path})", flush=True)
        elif now >= c.restart_at:
            fresh = _spawn(c.name, c.cmd or [], c.env or {}, logs)
            fresh.restarts = [*(c.restarts or []), now]
            children[i] = fresh
            print(f"eap: {c.name} restarted (pid {fresh.proc.pid})", flush=True)


def _stop(children: list[Child]) -> None:
    for c in children:
        if c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for c in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            c.proc.wait(remaining)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait(5)
        # Kill anything the child left behind in its group (e.g. Dagster gRPC code servers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
            return resp.status == 200
    except OSError:
        return False


def _wait_ready(children: list[Child], checks: dict[str, str], timeout_s: float, stopping: Callable[[], bool]) -> None:
    pending = dict(checks)
    deadline = time.monotonic() + timeout_s
    while pending:
        if stopping():
            return
        for c in children:
            if c.proc.poll() is not None:
                raise ChildFailed(
                    f"{c.name} exited with code {c.proc.returncode} during start-up; last log lines "
                    f"({c.log_path}):\n{c.tail()}"
                )
        for name, url in list(pending.items()):
            if _http_ok(url):
                print(f"  {name} ready", flush=True)
                pending.pop(name)
        if time.monotonic() > deadline:
            raise ChildFailed(f"timed out after {timeout_s:.0f}s waiting for: {', '.join(pending)}")
        time.sleep(0.5)


def _wait_port(children: list[Child], name: str, host: str, port: int, timeout_s: float,
               stopping: Callable[[], bool]) -> None:
    """Wait until a child listens on host:port (the code server opens its port once the definitions are
    loaded); fail with its log when it exits first."""
    deadline = time.monotonic() + timeout_s
    child = next(c for c in children if c.name == name)
    while not stopping():
        if child.proc.poll() is not None:
            raise ChildFailed(f"{name} exited with code {child.proc.returncode} during start-up; last log lines "
                              f"({child.log_path}):\n{child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            print(f"  {name} ready", flush=True)
            return
        if time.monotonic() > deadline:
            raise ChildFailed(f"timed out after {timeout_s:.0f}s waiting for: {name}")
        time.sleep(0.3)


def _write_secret(settings: Settings, name: str, value: str) -> Path:
    """A secret as a 0600 file in the 0700 secrets folder of EAP_HOME, for children to read."""
    settings.secrets_dir.mkdir(parents=True, exist_ok=True)
    path = settings.secrets_dir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.chmod(path, 0o600)
    os.chmod(settings.secrets_dir, 0o700)
    return path


def embedding_service_key(settings: Settings) -> Path:
    """A fresh random key for this start's embedding service, in a 0600 file the Dagster children read."""
    return _write_secret(settings, "embedding_service.key", secrets.token_urlsafe(32))


def prepare_dagster_home(dagster_home: Path) -> Path:
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home


def signing_key_file(settings: Settings) -> Path:
    """The signing key as a 0600 file children read (EAP_JWT_SECRET_FILE), never an environment
    variable (readable in /proc/<pid>/environ and inherited by every grandchild)."""
    if settings.jwt_secret is None and settings.jwt_secret_file is not None:
        return settings.jwt_secret_file
    secret = settings.jwt_signing_secret()  # the dev key lives in EAP_HOME/secrets/jwt_secret already
    if settings.jwt_secret is not None:
        return _write_secret(settings, "jwt_secret.from_env", secret)
    path = settings.secrets_dir / "jwt_secret"
    os.chmod(path, 0o600)
    os.chmod(settings.secrets_dir, 0o700)
    return path


_SECRET_VARS = ("DATABASE_URL", "EAP_DATABASE_URL", "EAP_JWT_SECRET", "EAP_DAGSTER_PG_URL", "EAP_DAGSTER_DATABASE_URL",
                "EAP_SYSTEM_DATABASE_URL", "EAP_APP_DATABASE_URL")


EVENT_BATCH_SIZE = 1000


def child_env(settings: Settings, urls: DatabaseUrls) -> dict[str, str]:
    """Environment of the Dagster processes: they run migrations and pipeline tasks, so they get the
    privileged URL (the API does not: see api_env)."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARS}
    env.update(
        {
            "EAP_HOME": str(settings.home),
            "DAGSTER_HOME": str(settings.dagster_home),
            "EAP_DAGSTER_PG_URL": urls.dagster,
            # Children attach to the server this process owns; they never start or stop it.
            "DATABASE_URL": urls.admin,
            "EAP_APP_DATABASE_URL": urls.app,
            "EAP_DAGSTER_DATABASE_URL": urls.dagster,
            "EAP_JWT_SECRET_FILE": str(signing_key_file(settings)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # A run over N documents records one materialization per asset and document: in batches, one INSERT per
    # step and asset instead of N round trips (Dagster's own switch, read by the run workers).
    env.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
    return env


def _system_role_usable(settings: Settings, urls: DatabaseUrls) -> bool:
    """Can the system role log in and become the owner? (A DATABASE_URL role without CREATEROLE may
    not have been able to set it up.)"""
    import sqlalchemy as sa

    if not urls.system:
        return False
    eng = sa.create_engine(urls.system, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text(f'SET ROLE "{settings.owner_db_role}"'))
        return True
    except sa.exc.DBAPIError:
        return False
    finally:
        eng.dispose()


def api_env(settings: Settings, urls: DatabaseUrls) -> dict[str, str]:
    """Least privilege for the process that faces the network: the application role's URL and the
    system role's (member of the owner role, not a superuser) — no superuser URL, no Dagster
    database, and the signing key only as a 0600 file path."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARS}
    if not _system_role_usable(settings, urls):
        print("  warning: the system database role is not usable; the API gets DATABASE_URL", flush=True)
        env["DATABASE_URL"] = urls.admin
    env.update(
        {
            "EAP_HOME": str(settings.home),
            "EAP_APP_DATABASE_URL": urls.app,
            "EAP_SYSTEM_DATABASE_URL": urls.system,
            "EAP_JWT_SECRET_FILE": str(signing_key_file(settings)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_up(api_port: int | None = None, dagster_port: int | None = None, mes_simulator: bool = False,
           sap_simulator: bool = False, local_model: bool = False) -> int:
    from core.db.database import bootstrap, stop_embedded
    from core.logging import configure_logging
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings
    from identity.tenancy import create_tenant, ensure_user

    settings = get_settings()
    if api_port is not None or dagster_port is not None:
        settings = settings.model_copy(
            update={"api_port": api_port or settings.api_port, "dagster_port": dagster_port or settings.dagster_port}
        )
    host = "127.0.0.1"
    if settings.api_port == settings.dagster_port:
        raise ConfigurationError("--api-port and --dagster-port must differ")
    home_lock = acquire_home_lock(settings.home)  # noqa: F841 - held until this process ends
    ensure_port_free(host, settings.api_port, "--api-port")
    ensure_port_free(host, settings.dagster_port, "--dagster-port")

    configure_logging()
    stop_requested = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    children: list[Child] = []
    sim = None
    sap_sim = None
    try:
        print(f"EAP_HOME={settings.home}", flush=True)
        urls = bootstrap(settings)
        where = f"embedded PostgreSQL in {settings.pgdata_dir}" if urls.embedded else urls.describe()
        print(f"  database ready ({where})", flush=True)
        tenant, _ = create_tenant(settings.default_tenant)
        ensure_user(tenant, "admin", Role.admin)
        # Production (EAP_ENV=prod): no sample documents and no printed token; `eap seed` is explicit.
        prod = settings.env == "prod"
        samples = [] if prod else sorted((REPO_ROOT / "samples").glob("*.*"))
        if samples:
            from eap.ingest import submit_paths

            queued, _ = submit_paths(tenant.id, samples, classification="II", acl=None, actor="eap-up",
                                     root=REPO_ROOT)
            fresh = sum(1 for _, s in queued if not s.unchanged)
            print(f"  sample documents: {len(queued)} submitted ({fresh} new; the Dagster daemon ingests them)",
                  flush=True)

        if mes_simulator:
            from connectors.mes_simulator import MESSimulator
            from monitoring.polling import configure_mes

            sim = MESSimulator(seed=7).start()
            configure_mes(tenant.id, {"base_url": sim.url, "timeout_s": 5.0, "retries": 2}, actor="eap-up",
                          actor_role="system")
            print(f"  MES simulator at {sim.url} (tenant {tenant.name}; add rules with PUT /v1/alert-rules)",
                  flush=True)
        if sap_simulator:
            from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator
            from monitoring.sap_extracts import configure_sap

            sap_sim = SAPSimulator(seed=7).start()
            # The password reaches the children as an environment variable (never the tenant settings).
            os.environ["EAP_SAP_SIM_PASSWORD"] = DEFAULT_PASSWORD
            configure_sap(tenant.id, {"base_url": sap_sim.url, "username": DEFAULT_USER,
                                      "password_env": "EAP_SAP_SIM_PASSWORD", "timeout_s": 10.0, "retries": 2},
                          actor="eap-up", actor_role="system")
            print(f"  SAP simulator (OData v2) at {sap_sim.url} (tenant {tenant.name}; extracts: job sap_extracts)",
                  flush=True)
        prepare_dagster_home(settings.dagster_home)
        bindir = Path(sys.executable).parent
        logs = settings.home / "logs"
        llm_env: dict[str, str] = {}  # --local-model: every tier through the LiteLLM proxy (eap/local_model.py)
        ready: dict[str, str] = {}
        if local_model:
            from eap.local_model import LocalModel

            lm = LocalModel(model_port=settings.local_model_port, proxy_port=settings.local_proxy_port)
            for name, (cmd, cenv) in (("model-server", lm.model_server_command()),
                                      ("litellm-proxy", lm.proxy_command())):
                children.append(_spawn(name, cmd, cenv, logs))
            llm_env, ready = lm.platform_env(), lm.checks()
            print(f"  local model: SmolLM2 (llama.cpp) at {lm.model_url}, LiteLLM proxy at {lm.proxy_url}", flush=True)
        from core.embedding import LOCAL_ALIASES
        from eap.local_model import free_port
        from eap.serve import workspace_yaml

        env = {**child_env(settings, urls), **llm_env}
        if settings.embedding_service and settings.embedding_model in LOCAL_ALIASES:
            # The local model loaded once, for every ingest run (eap/embedding_service.py); runs that start
            # before it is ready, or find it gone, embed in their own process.
            emb_port = free_port()
            key_file = embedding_service_key(settings)
            children.append(_spawn("embedding-service",
                                   [sys.executable, "-m", "eap.embedding_service", "--host", "127.0.0.1",
                                    "--port", str(emb_port)],
                                   {**env, "EAP_EMBEDDING_SERVICE_KEY_FILE": str(key_file)}, logs))
            env.update({"EAP_EMBEDDING_SERVICE_URL": f"http://127.0.0.1:{emb_port}",
                        "EAP_EMBEDDING_SERVICE_KEY_FILE": str(key_file)})
            ready["embedding-service"] = f"http://127.0.0.1:{emb_port}/health"
        # One long-lived gRPC code server that the webserver and the daemon share, as in the compose file and
        # Dagster's Helm chart: with a `python_module` workspace each of them started its own code server and
        # the daemon replaced its one every minute, importing the definitions again each time.
        code_port = free_port()
        # The run workers are its children and inherit its priority (nice RUN_NICENESS): parsing and indexing
        # take the cycles the embedding process (normal priority) leaves; the API and the UI keep theirs.
        children.append(_spawn("code-server",
                               ["nice", "-n", str(RUN_NICENESS), str(bindir / "dagster"), "api", "grpc",
                                "-h", "127.0.0.1", "-p", str(code_port), "-m", "definitions", "--location-name",
                                "eap"], env, logs))
        _wait_port(children, "code-server", "127.0.0.1", code_port, timeout_s=120, stopping=lambda: stop_requested)
        workspace = str(workspace_yaml(settings.dagster_home, f"127.0.0.1:{code_port}"))
        children.append(
            _spawn(
                "dagster-webserver",
                [str(bindir / "dagster-webserver"), "-h", host, "-p", str(settings.dagster_port), "-w", workspace],
                env,
                logs,
            )
        )
        children.append(_spawn("dagster-daemon", [str(bindir / "dagster-daemon"), "run", "-w", workspace], env, logs))
        children.append(
            _spawn(
                "api",
                [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", host,
                 "--port", str(settings.api_port)],  # access log on: one line per request, with its id
                {**api_env(settings, urls), **llm_env},
                logs,
            )
        )
        api = f"http://{host}:{settings.api_port}"
        dagster = f"http://{host}:{settings.dagster_port}"
        _wait_ready(
            children,
            {"api": f"{api}/readyz", "dagster-webserver": f"{dagster}/server_info", **ready},
            timeout_s=180,
            stopping=lambda: stop_requested,
        )
        if not stop_requested and prod:
            print(
                "\nEnterprise Agent Platform is up (EAP_ENV=prod: no token printed; sign in through the identity "
                "provider or a break-glass account)\n"
                f"  API         {api}\n  Dagster UI  {dagster}\n  Logs        {logs}\n"
                f"  Tenant      {tenant.name} ({tenant.id})\nPress Ctrl-C to stop.",
                flush=True,
            )
        elif not stop_requested:
            token = mint_token(settings, tenant_id=tenant.id, tenant=tenant.name, role=Role.admin,
                               subject=f"admin@{tenant.name}")
            print(
                "\nEnterprise Agent Platform is up\n"
                f"  API         {api}   (OpenAPI docs: {api}/docs)\n"
                f"  Dagster UI  {dagster}\n"
                f"  Logs        {logs}\n"
                f"  Tenant      {tenant.name} ({tenant.id})\n"
                f"EAP_ADMIN_TOKEN={token}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
        while not stop_requested:
            _supervise(children, logs, time.monotonic())
            time.sleep(0.5)
        print("stopping…", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(children)
        if sim is not None:
            sim.stop()
        if sap_sim is not None:
            sap_sim.stop()
        from core.db.database import dispose_engines

        dispose_engines()
        stop_embedded()
        if children:
            print("stopped.", flush=True)
