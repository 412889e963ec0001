"""`eap serve <component>`: one long-running process per command, for containers and systemd units.

    eap serve api                [--host 0.0.0.0] [--port 8000] [--workers N]
    eap serve dagster-webserver  [--host 0.0.0.0] [--port 3000] [--code-server HOST:PORT]
    eap serve dagster-daemon     [--code-server HOST:PORT]
    eap serve code-server        [--host 0.0.0.0] [--port 4000]

Unlike `eap up` nothing here creates databases, applies migrations or seeds data (`eap db upgrade` and
`eap seed` are explicit steps); `serve api` refuses to start on a database that is not migrated. The
Dagster commands replace this process (exec), so the container's PID 1 is the Dagster process itself
and receives the orchestrator's signals directly.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("api", "dagster-webserver", "dagster-daemon", "code-server")
DEFAULT_PORTS = {"api": 8000, "dagster-webserver": 3000, "code-server": 4000}


def dagster_yaml_source() -> Path:
    """The instance configuration: EAP_DAGSTER_YAML, else the one in the source tree / image (/app)."""
    explicit = os.environ.get("EAP_DAGSTER_YAML")
    candidates = [Path(explicit)] if explicit else [REPO_ROOT / "dagster.yaml", Path.cwd() / "dagster.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigurationError(f"dagster.yaml not found (looked at {', '.join(map(str, candidates))}); "
                             "set EAP_DAGSTER_YAML")


def workspace_yaml(dagster_home: Path, code_server: str | None) -> Path:
    """A workspace file in DAGSTER_HOME: the in-process code location, or a separate code server
    (`eap serve code-server`) at HOST:PORT, as in the compose file and Dagster's Helm chart."""
    path = dagster_home / "workspace.yaml"
    if code_server:
        host, _, port = code_server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"--code-server must be HOST:PORT, got {code_server!r}")
        body = (f"load_from:\n  - grpc_server:\n      host: {host}\n      port: {int(port)}\n"
                "      location_name: eap\n")
    else:
        body = "load_from:\n  - python_module:\n      module_name: definitions\n      location_name: eap\n"
    path.write_text(body)
    return path


def dagster_env() -> dict[str, str]:
    """DAGSTER_HOME with our dagster.yaml, and the Dagster storage URL (psycopg2 driver)."""
    from core.db.database import get_urls
    from core.settings import get_settings

    settings = get_settings()
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    src = dagster_yaml_source()
    if src.resolve() != (home / "dagster.yaml").resolve():
        shutil.copyfile(src, home / "dagster.yaml")
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(home)
    if not env.get("EAP_DAGSTER_PG_URL"):
        env["EAP_DAGSTER_PG_URL"] = settings.dagster_database_url or get_urls().dagster
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_secrets() -> None:
    """Fail before binding a port: settings validation (EAP_ENV=prod refuses missing/placeholder
    secrets) plus a readable signing key."""
    from core.settings import get_settings

    get_settings().jwt_signing_secret()


def _exec(argv: list[str], env: dict[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)  # noqa: S606 - fixed argv built above, no shell


def prepare_multiprocess_metrics(workers: int) -> None:
    """prometheus_client's multi-process mode: every worker writes its samples to files in one folder,
    /metrics reads them all. The folder must be empty when the server starts (stale files of a
    previous run would be summed in)."""
    from core.settings import get_settings

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder and workers <= 1:
        return
    path = Path(folder) if folder else get_settings().home / "prometheus-multiproc"
    if path.exists():
        for f in path.glob("*.db"):
            f.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def serve_api(host: str, port: int, workers: int) -> int:
    import uvicorn

    from core.logging import uvicorn_log_config
    from core.settings import get_settings
    from eap.db import require_current

    check_secrets()
    require_current(wait_s=get_settings().db_wait_seconds)
    prepare_multiprocess_metrics(workers)
    from core.db.database import dispose_engines

    dispose_engines()  # no pooled connection is inherited by the workers
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers, access_log=True,
                log_config=uvicorn_log_config(get_settings().log_json), proxy_headers=True,
                timeout_graceful_shutdown=20)
    return 0


def run_serve(component: str, host: str | None, port: int | None, workers: int = 1,
              code_server: str | None = None) -> int:
    from core.settings import get_settings

    settings = get_settings()
    bind = host or settings.api_host
    if component == "api":
        return serve_api(bind, port or settings.api_port, workers)
    check_secrets()
    bindir = Path(sys.executable).parent
    if component == "code-server":
        argv = [str(bindir / "dagster"), "code-server", "start", "-h", bind,
                "-p", str(port or DEFAULT_PORTS["code-server"]), "-m", "definitions", "--location-name", "eap",
                "--log-format", "json"]
        return _exec(argv, dagster_env())
    env = dagster_env()
    workspace = workspace_yaml(Path(env["DAGSTER_HOME"]), code_server)
    if component == "dagster-webserver":
        argv = [str(bindir / "dagster-webserver"), "-h", bind, "-p", str(port or settings.dagster_port),
                "-w", str(workspace)]
    else:
        argv = [str(bindir / "dagster-daemon"), "run", "-w", str(workspace)]
    return _exec(argv, env)
