"""Suite-wide setup: offline environment, the no-network guard, the real embedded database."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid

import pytest

# Before anything imports litellm/transformers/dagster: stay offline and quiet.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "EAP_ENV": "test",
    "EAP_LOG_JSON": "false",
}.items():
    os.environ[_k] = _v
for _k in ("DATABASE_URL", "EAP_DATABASE_URL", "EAP_APP_DATABASE_URL", "EAP_DAGSTER_DATABASE_URL", "EAP_JWT_SECRET"):
    os.environ.pop(_k, None)

# --------------------------------------------------------------------------- network guard

NETWORK_ATTEMPTS: list[str] = []
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto
_real_getaddrinfo = socket.getaddrinfo


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not _is_loopback(address[0]):
            NETWORK_ATTEMPTS.append(f"connect {address!r}")
            raise ConnectionRefusedError(f"test network guard: non-loopback connection to {address!r} blocked")


def _guarded_connect(self, address):
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    _check(self, args[-1])
    return _real_sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        NETWORK_ATTEMPTS.append(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"test network guard: resolving {host!r} blocked")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
    # The model-seam guard (pydantic-ai's ALLOW_MODEL_REQUESTS=False): a model-server call a test did not
    # script (core.llm.testing.ScriptedModel) fails; the extractive responder is local and stays allowed.
    from core.llm.testing import block_model_requests

    block_model_requests()


@pytest.fixture(autouse=True)
def _no_network():
    """Fail the test if it tried to reach the network, even if the code swallowed the error."""
    NETWORK_ATTEMPTS.clear()
    yield
    attempts = list(NETWORK_ATTEMPTS)
    NETWORK_ATTEMPTS.clear()
    if attempts:
        pytest.fail(f"test tried to reach the network: {attempts}")


@pytest.fixture(autouse=True)
def _no_model_requests():
    """Fail the test if it made a model-server call it did not script, even if the code swallowed the error."""
    from core.llm.litellm_model import BLOCKED_REQUESTS

    BLOCKED_REQUESTS.clear()
    yield
    blocked = list(BLOCKED_REQUESTS)
    BLOCKED_REQUESTS.clear()
    if blocked:
        pytest.fail(f"test made unscripted model-server calls (script them with core.llm.testing.ScriptedModel): "
                    f"{blocked}")


@pytest.fixture
def blocked_model_requests() -> list[str]:
    """For the guard's own test: the model-server calls blocked so far (cleared before the check)."""
    from core.llm.litellm_model import BLOCKED_REQUESTS

    return BLOCKED_REQUESTS


@pytest.fixture
def network_attempts() -> list[str]:
    """For the guard's own test: the list of blocked attempts (cleared before the check)."""
    return NETWORK_ATTEMPTS


# --------------------------------------------------------------------------- database


@pytest.fixture(scope="session")
def eap_home():
    # Not under pytest's basetemp: pytest prunes old basetemp folders, and a concurrent pytest run
    # on the same machine would delete the live database's data folder from under it.
    import shutil
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="eap-test-"))
    os.environ["EAP_HOME"] = str(home)
    from core.settings import get_settings

    get_settings.cache_clear()
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def platform_db(eap_home):
    """The real embedded PostgreSQL + pgvector, bootstrapped and migrated once per session."""
    from core.db import database

    database.get_urls.cache_clear()
    urls = database.bootstrap()
    yield urls
    database.dispose_engines()
    database.stop_embedded()


@pytest.fixture
def make_tenant(platform_db):
    from identity.tenancy import create_tenant

    def _make(prefix: str = "t"):
        ref, _ = create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}")
        return ref

    return _make
