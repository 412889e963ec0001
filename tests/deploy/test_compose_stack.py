"""deploy/compose.yaml run for real (issue 16, item 4) with podman-compose: PostgreSQL + pgvector from the
platform image, the migrations service, the API, the Dagster code server, webserver and daemon, on the
compose file's `internal` network (no route out of the stack; containers reach each other by service name).
The operator's steps as RUNBOOK.md gives them (.env, `up -d`, `eap seed`, `eap token`), then a client on the
same network uploads a document, waits for the daemon's ingestion run, gets a cited chat answer, reads the
Dagster UI's server info and /metrics, and fails to reach an outside address. Skips when the image is
absent (.ci/run builds it with deploy/build-image.sh before running tests/deploy)."""

from __future__ import annotations

import json
import secrets
import shutil
import uuid
from pathlib import Path

import pytest

from tests.builders import PODMAN, exec_eap, image_present, wait_migrated
from tests.builders import PODMAN_COMPOSE as COMPOSE
from tests.builders import run_checked as run

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/eap:latest"


pytestmark = [pytest.mark.container, pytest.mark.timeout(2400),
              pytest.mark.skipif(not image_present(IMAGE), reason=f"image {IMAGE} missing: deploy/build-image.sh "
                                                               "builds it (.ci/run does, then runs tests/deploy)")]



def test_compose_stack_runs_air_gapped_and_answers_with_citations(tmp_path: Path) -> None:
    assert COMPOSE.exists(), "podman-compose (dev extra) is needed"
    project = f"eapc{uuid.uuid4().hex[:8]}"
    for name in ("compose.yaml", "litellm_config.yaml", "litellm_local.yaml"):
        shutil.copy(REPO / "deploy" / name, tmp_path / name)
    env_file = tmp_path / ".env"
    env_file.write_text(f"POSTGRES_PASSWORD={secrets.token_urlsafe(18)}\n"
                        f"EAP_APP_DB_PASSWORD={secrets.token_urlsafe(18)}\n"
                        f"EAP_JWT_SECRET={secrets.token_urlsafe(48)}\n")
    env_file.chmod(0o600)
    compose = [str(COMPOSE), "--podman-args", "--runtime runc --cgroup-manager cgroupfs", "-p", project]
    network = f"{project}_eap"

    def cname(service: str) -> str:
        return f"{project}_{service}_1"

    def logs(*services: str) -> dict[str, str]:
        return {s: run([*PODMAN, "logs", "--tail", "25", cname(s)], check=False).stderr[-2500:] for s in services}

    try:
        run(compose + ["up", "-d"], cwd=tmp_path, timeout=900)
        info = json.loads(run([*PODMAN, "network", "inspect", network]).stdout)[0]
        assert info["internal"] is True, info               # no route out of the stack
        # The migrations service retries until PostgreSQL accepts connections, then exits 0.
        deadline = wait_migrated(cname("migrate"), lambda: logs("db", "migrate"))
        # The API may have started before the migrations and exited (its restart policy brings it back):
        # exec_eap waits until it runs.
        def api_eap(*args: str) -> str:
            return exec_eap(cname("api"), *args, deadline=deadline, logs=lambda: logs("api", "migrate"))

        api_eap("seed", "--tenant", "default")
        token = api_eap("token", "--tenant", "default", "--role", "admin").strip()
        client = REPO / "tests" / "deploy" / "smoke_client.py"
        r = run([*PODMAN, "run", "--rm", "--network", network, "-v", f"{client}:/tmp/smoke_client.py:ro,Z",
                 "--entrypoint", "/opt/eap/bin/python", IMAGE, "/tmp/smoke_client.py", token,
                 "http://api:8000", "http://dagster-webserver:3000"], check=False, timeout=2000)
        assert r.returncode == 0 and "SMOKE OK" in r.stdout, (
            r.stdout[-3000:], r.stderr[-3000:], logs("api", "dagster-daemon", "code-server"))
        assert "OUTSIDE BLOCKED" in r.stdout and "DOCUMENT indexed" in r.stdout
        answer = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("ANSWER "))[7:])
        assert answer["cited"] and answer["answer"]
        # Migrations really applied (not only "the API started"): `eap db check` exits 0 only when current.
        api_eap("db", "check")
    finally:
        run(compose + ["down", "-v", "-t", "10"], check=False, cwd=tmp_path, timeout=600)
        run([*PODMAN, "network", "rm", "-f", network], check=False)


def test_image_entrypoint_runs_the_dagster_commands_of_dagsters_helm_chart() -> None:
    """Dagster's chart passes `dagster api grpc …` / `dagster code-server start …` as container args and the
    K8sRunLauncher's run pods `dagster api execute_run …` (deploy/helm/dagster-values.yaml): the image's
    entrypoint runs those, and everything else as `eap ARGS`."""
    dagster = run([*PODMAN, "run", "--rm", "--network", "none", IMAGE, "dagster", "code-server", "start", "--help"],
                  check=False, timeout=300)
    assert dagster.returncode == 0 and "--module-name" in dagster.stdout, (dagster.stdout[-2000:], dagster.stderr)
    eap = run([*PODMAN, "run", "--rm", "--network", "none", IMAGE, "--help"], check=False, timeout=300)
    assert eap.returncode == 0 and "serve" in eap.stdout and "seed" in eap.stdout, eap.stdout
