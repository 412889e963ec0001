"""Browser tier, driven by Playwright with Debian's headless Chromium (/usr/bin/chromium; `playwright install`
is never run: nothing is downloaded):

- the web app (frontend/dist, built by scripts/install.sh) on a real uvicorn server on loopback, one per module,
  in this process so a test can drive the Dagster ingestion pipeline against the database the page reads
  (`web_server`, `browser`, `web`, `axe`);
- a real dagster-webserver on loopback over a Dagster instance of its own (stored in the session's PostgreSQL,
  as `eap up` stores it) (`dagster_ui`, `run_pipeline`, `browser_page`).

Screenshots go to tests/browser/screenshots/ (git-ignored; named in README.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
DIST = REPO / "frontend" / "dist"
AXE = REPO / "frontend" / "node_modules" / "axe-core" / "axe.min.js"


# --------------------------------------------------------------------------- the web app (frontend/)


def _require_web_build() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    if not (DIST / "index.html").is_file() or not AXE.is_file():
        if shutil.which("node") is None:
            pytest.skip("the web app is not built and Node is not installed (scripts/install.sh builds it, Node 20+)")
        pytest.fail("the web app is not built: run scripts/install.sh (or cd frontend && npm ci && npm run build)")


@pytest.fixture(scope="module")
def web_server(platform_db):
    """The app factory on uvicorn at http://127.0.0.1:<free port>, for the module."""
    _require_web_build()
    import uvicorn

    from serving.app import create_app
    from tests.builders import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def browser():
    _require_web_build()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                     "--disable-background-networking", "--disable-component-update",
                                     "--no-first-run", "--disable-sync"])
        yield b
        b.close()


class Web:
    """One browser context on the platform: `page`, every request URL it made (`requests`), screenshots."""

    def __init__(self, page, base: str, requests: list[str]) -> None:
        self.page, self.base, self.requests = page, base, requests

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"web-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def foreign_requests(self) -> list[str]:
        """Requests to any host but the platform's own (data:/blob: URLs are not requests to a host)."""
        own = urlsplit(self.base).netloc
        return [u for u in self.requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != own]

    def sign_in(self, token: str) -> None:
        from playwright.sync_api import expect

        self.page.goto("/")
        self.page.get_by_role("tab", name="Token").click()
        self.page.get_by_label("Access token").fill(token)
        self.page.get_by_role("button", name="Use token").click()
        expect(self.page.get_by_test_id("whoami")).to_be_visible()


@pytest.fixture
def web(browser, web_server):
    """A fresh context (1280x800, light scheme) recording every request; closed after the test, which fails if
    the app asked any other host for anything. CSP is bypassed so that axe can be injected and so that a
    request the page's CSP would block is still seen (and counted) here."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web_server, bypass_csp=True,
                              color_scheme="light", service_workers="block")
    ctx.set_default_timeout(20_000)
    seen: list[str] = []
    ctx.on("request", lambda r: seen.append(r.url))
    w = Web(ctx.new_page(), web_server, seen)
    yield w
    ctx.close()
    assert not w.foreign_requests(), f"the web app reached beyond the platform: {w.foreign_requests()}"


@pytest.fixture
def axe():
    """`axe(page)`: axe-core (from npm, the local file) on the current page → (rule, impact, help, first
    elements with what failed) of every serious or critical violation."""

    def run(page, impacts=("serious", "critical")) -> list[tuple]:
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the full report of the last check, next to the screenshots
        (SCREENSHOTS / "web-axe-last.json").write_text(json.dumps(result["violations"], indent=1))
        return [(v["id"], v["impact"], v["help"], [(n["html"][:160], n.get("failureSummary")) for n in v["nodes"]][:4])
                for v in result["violations"] if v["impact"] in impacts]

    return run


# --------------------------------------------------------------------------- the Dagster UI


@pytest.fixture(scope="module")
def client(platform_db):
    from serving.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="module")
def dagster_ui(platform_db, tmp_path_factory):
    """(instance, base URL): the instance in the session database's Dagster storage (runs launched from the UI
    start at once: DefaultRunCoordinator, no daemon needed), and the webserver serving workspace.yaml on it."""
    import dagster as dg

    from tests.builders import free_port, http_get

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/install.sh)")
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {json.dumps(platform_db.dagster)}\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "run_launcher:\n  module: dagster.core.launcher\n  class: DefaultRunLauncher\n"
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATABASE_URL": platform_db.admin, "PYTHONUNBUFFERED": "1"}
    instance = dg.DagsterInstance.from_config(str(home))
    port = free_port()
    log = open(home / "webserver.log", "w")  # closed at teardown
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                             "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("dagster-webserver exited:\n" + (home / "webserver.log").read_text()[-3000:])
        try:
            if http_get(f"{base}/server_info")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    else:
        proc.terminate()
        pytest.fail("dagster-webserver did not answer in time:\n" + (home / "webserver.log").read_text()[-3000:])
    try:
        yield instance, base
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        instance.dispose()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def screenshots() -> Path:
    """Where browser tests write their screenshots (named in README.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def run_pipeline(dagster_ui):
    """One intake sensor tick on the UI's instance, then every ingestion run it requested (in process, as the
    daemon's run worker would run them): returns the runs' results."""
    from tests.builders import run_intake

    instance, _ = dagster_ui
    state: dict = {"cursor": None}
    return lambda: run_intake(instance, state)


@pytest.fixture
def browser_page():
    """A headless Chromium page (Playwright's driver, Debian's browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            yield page
        finally:
            browser.close()
