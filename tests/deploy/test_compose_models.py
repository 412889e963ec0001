"""deploy/compose.yaml's "models" profile run for real (issue 16, item 4: "LiteLLM proxy with the on-prem-only
config, optional model server"): the stack of test_compose_stack.py plus the LiteLLM proxy image
(deploy/Containerfile.litellm) with deploy/litellm_compose.yaml and the model-server image
(deploy/Containerfile.model: llama.cpp serving SmolLM2-135M), the platform pointed at the proxy by
deploy/compose.models.yaml — the operator's steps as RUNBOOK.md §1 gives them. All on the compose file's
`internal` network. A client on that network checks the proxy's health and key, uploads a document, waits for
the daemon's ingestion, and asks a chat question; the test asserts the answer was written BY THE MODEL THROUGH
THE PROXY: the answer's model is a proxy alias (not the extractive responder, no fallback), its generate steps
carry the token counts the proxy reported, /metrics counts those tokens, and the proxy's and the model server's
logs show the completion requests. Nothing in the stack reaches outside. Skips when an image is absent
(deploy/build-image.sh builds all three; .ci/run runs it before tests/deploy). ~2-3 minutes on 2 cores."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.builders import PODMAN, exec_eap, image_present, wait_migrated
from tests.builders import PODMAN_COMPOSE as COMPOSE
from tests.builders import run_checked as run

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("localhost/eap:latest", "localhost/eap-litellm:latest", "localhost/eap-model:latest")
PROXY_ALIASES = {"eap-light", "eap-standard", "eap-heavy"}


MISSING = [image for image in IMAGES if not image_present(image)]
pytestmark = [pytest.mark.container, pytest.mark.timeout(2400),
              pytest.mark.skipif(bool(MISSING), reason=f"image(s) {', '.join(MISSING)} missing: deploy/build-image.sh "
                                                       "builds them (.ci/run does, then runs tests/deploy)")]


def _line(out: str, prefix: str) -> str:
    return next(ln for ln in out.splitlines() if ln.startswith(prefix + " "))[len(prefix) + 1:]


def test_models_profile_answers_through_the_litellm_proxy_on_an_internal_network(tmp_path: Path) -> None:
    assert COMPOSE.exists(), "podman-compose (dev extra) is needed"
    project = f"eapm{uuid.uuid4().hex[:8]}"
    for name in ("compose.yaml", "compose.models.yaml", "litellm_compose.yaml", "litellm_config.yaml"):
        shutil.copy(REPO / "deploy" / name, tmp_path / name)
    master_key = "sk-" + secrets.token_urlsafe(24)
    env_file = tmp_path / ".env"
    env_file.write_text(f"POSTGRES_PASSWORD={secrets.token_urlsafe(18)}\n"
                        f"EAP_APP_DB_PASSWORD={secrets.token_urlsafe(18)}\n"
                        f"EAP_JWT_SECRET={secrets.token_urlsafe(48)}\n"
                        f"LITELLM_MASTER_KEY={master_key}\n")
    env_file.chmod(0o600)
    compose = [str(COMPOSE), "--podman-args", "--runtime runc --cgroup-manager cgroupfs", "-p", project,
               "-f", "compose.yaml", "-f", "compose.models.yaml", "--profile", "models"]
    network = f"{project}_eap"

    def cname(service: str) -> str:
        return f"{project}_{service}_1"

    def logs(*services: str, tail: str = "25") -> dict[str, str]:
        out = {}
        for s in services:
            r = run([*PODMAN, "logs", "--tail", tail, cname(s)], check=False)
            out[s] = (r.stdout + r.stderr)[-2500:] if tail != "-1" else r.stdout + r.stderr
        return out

    started = time.monotonic()
    try:
        run(compose + ["up", "-d"], cwd=tmp_path, timeout=900)
        info = json.loads(run([*PODMAN, "network", "inspect", network]).stdout)[0]
        assert info["internal"] is True, info               # no route out of the stack
        running = {c["Names"][0] for c in json.loads(run([*PODMAN, "ps", "--format", "json",
                                                          "--filter", f"label=io.podman.compose.project={project}"]
                                                         ).stdout)}
        assert {cname("litellm"), cname("model-server")} <= running, running
        # The platform services got the profile's settings (and the default stack's services did not change).
        env = json.loads(run([*PODMAN, "inspect", cname("api")]).stdout)[0]["Config"]["Env"]
        assert "EAP_LLM_API_BASE=http://litellm:4000/v1" in env and "EAP_LLM_MODEL_LIGHT=openai/eap-light" in env
        deadline = wait_migrated(cname("migrate"), lambda: logs("db", "migrate"))

        def api_eap(*args: str) -> str:
            return exec_eap(cname("api"), *args, deadline=deadline, logs=lambda: logs("api", "migrate"))

        api_eap("seed", "--tenant", "default")  # idempotent, like `eap token`
        token = api_eap("token", "--tenant", "default", "--role", "admin").strip()
        client = REPO / "tests" / "deploy" / "models_client.py"
        shared = REPO / "tests" / "deploy" / "smoke_client.py"  # its helpers, imported by models_client.py
        r = run([*PODMAN, "run", "--rm", "--network", network, "-v", f"{client}:/tmp/models_client.py:ro,Z",
                 "-v", f"{shared}:/tmp/smoke_client.py:ro,Z",
                 "--entrypoint", "/opt/eap/bin/python", IMAGES[0], "/tmp/models_client.py", token,
                 "http://api:8000", "http://dagster-webserver:3000", "http://litellm:4000", master_key],
                check=False, timeout=2000)
        out = r.stdout
        assert r.returncode == 0 and "CLIENT DONE" in out, (
            out[-3000:], r.stderr[-3000:], logs("api", "litellm", "model-server", "dagster-daemon"))
        # The proxy: alive, refuses a caller without its key, serves the tier aliases of the on-prem config.
        assert "PROXY WITHOUT KEY 401" in out, out
        assert set(json.loads(_line(out, "PROXY MODELS"))) == PROXY_ALIASES, out
        assert "OUTSIDE BLOCKED" in out and _line(out, "DOCUMENT").startswith("indexed"), out
        answer = json.loads(_line(out, "ANSWER"))
        # Written by the model behind the proxy: a proxy alias, not the extractive responder, and no fallback.
        assert answer["model"] in {f"openai/{a}" for a in PROXY_ALIASES}, answer
        assert not any("unavailable" in n for n in answer["retrieval_notes"]), answer
        assert answer["answer"].strip() and answer["outcome"] in ("verified", "downgraded", "abstained"), answer
        generated = [st for st in json.loads(_line(out, "GENERATE")) if "completion_tokens" in st]
        # Each call ran on its tier's proxy alias (VERIFY may escalate LIGHT → STANDARD → HEAVY and revise), the
        # stored answer's model is one of them, and every call carries the token counts the proxy reported.
        assert generated and all(st["model"] == f"openai/eap-{st['tier'].lower()}" for st in generated), generated
        assert answer["model"] in {st["model"] for st in generated}, (answer, generated)
        assert all(st["completion_tokens"] > 0 and st["prompt_tokens"] > 0 for st in generated), generated
        # /metrics counts those tokens by model (at least this answer's: the stack's other model calls, if any,
        # add to them).
        tokens: dict[tuple[str, str], float] = {}
        for st in generated:
            for kind in ("prompt", "completion"):
                tokens[st["model"], kind] = tokens.get((st["model"], kind), 0) + st[f"{kind}_tokens"]
        metric = {(m.group(1), m.group(2)): float(m.group(3)) for m in re.finditer(
            r'^METRIC eap_model_tokens_total\{kind="(prompt|completion)",model="([^"]+)",[^}]*\} (\S+)$', out, re.M)}
        metric = {(model, kind): v for (kind, model), v in metric.items()}
        assert all(metric.get(key, 0) >= n for key, n in tokens.items()), (metric, tokens)
        prompt = sum(n for (_, kind), n in tokens.items() if kind == "prompt")
        completion = sum(n for (_, kind), n in tokens.items() if kind == "completion")
        # The requests really went platform → proxy → model server (each logs the completion calls it served).
        proxy_log = logs("litellm", tail="-1")["litellm"]
        model_log = logs("model-server", tail="-1")["model-server"]
        served = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')
        assert len(served.findall(proxy_log)) >= len(generated), proxy_log[-2500:]
        assert len(served.findall(model_log)) >= len(generated), model_log[-2500:]
        # The proxy and the model server cannot reach outside either (the internal network has no route).
        probe = "import socket\ntry:\n socket.create_connection(('1.1.1.1', 53), timeout=3); print('REACHED')\n" \
                "except OSError as e: print('BLOCKED', type(e).__name__)"
        for service, py in (("litellm", "/opt/litellm/bin/python"), ("model-server", "/opt/model/bin/python")):
            p = run([*PODMAN, "exec", cname(service), py, "-c", probe], check=False, timeout=120)
            assert p.stdout.startswith("BLOCKED"), (service, p.stdout, p.stderr)
        # Migrations really applied: `eap db check` in the API container exits 0 only when the schema is current.
        api_eap("db", "check")
        print(f"models profile: {time.monotonic() - started:.0f} s; chat {_line(out, 'CHAT SECONDS')} s; "
              f"{prompt}+{completion} tokens; answer: {answer['answer'][:200]!r}")
    finally:
        run(compose + ["down", "-v", "-t", "10"], check=False, cwd=tmp_path, timeout=600)
        run([*PODMAN, "network", "rm", "-f", network], check=False)


def test_proxy_image_refuses_to_start_without_a_master_key() -> None:
    """The proxy with no key would serve every caller: its entrypoint refuses (exit 64) before LiteLLM starts."""
    r = run([*PODMAN, "run", "--rm", "--network", "none", IMAGES[1]], check=False, timeout=300)
    assert r.returncode == 64 and "LITELLM_MASTER_KEY" in r.stderr, (r.returncode, r.stdout, r.stderr)
    ok = run([*PODMAN, "run", "--rm", "--network", "none", "-e", "LITELLM_MASTER_KEY=sk-" + secrets.token_hex(8),
              IMAGES[1], "--version"], check=False, timeout=300)
    assert ok.returncode == 0 and "1.110.2" in ok.stdout + ok.stderr, (ok.stdout, ok.stderr)
