"""Security issue 12, findings 5, 10 and 12 — each attack through the real API and database:
calculator bombs, streams that fail, bodies before authentication, login abuse, NUL bytes,
tokens for tenants that do not exist, unexpected errors, long file names, a bad EAP_HOME."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import anyio
import pyotp
import pytest
from fastapi.testclient import TestClient

from core.models import Role
from core.security import Principal, mint_token
from core.settings import get_settings
from identity.accounts import set_local_password

EAP = str(Path(sys.executable).parent / "eap")


@pytest.fixture(scope="module")
def app(platform_db):
    from serving.app import create_app

    return create_app()


@pytest.fixture(scope="module")
def client(app):
    # Its own client address: the login rate limits of this module do not touch other modules'.
    with TestClient(app, client=("10.12.0.1", 40000)) as c:
        yield c


@pytest.fixture(scope="module")
def tenant(platform_db):
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"abuse-{uuid.uuid4().hex[:8]}")
    return t


def _h(tenant, role=Role.admin, subject="alice"):
    tok = mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name, role=role, subject=subject,
                     groups=["qa"])
    return {"Authorization": f"Bearer {tok}"}


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --------------------------------------------------------------------------- finding 5: calculator


@pytest.mark.parametrize("message", [
    "Calculate 1*(((9^99)^99)^99)^99",
    "Calculate 10^400 + 1",
    "What is 9.9^999 / 3?",
    "Calculate (10^200) * (10^200) - 1",
    "Calculate " + "+".join(["1"] * 240),
])
def test_calculator_bombs_are_refused_promptly_and_the_api_stays_responsive(client, tenant, message):
    result: dict = {}

    def ask() -> None:
        result["r"] = client.post("/v1/chat", json={"message": message}, headers=_h(tenant))

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    assert client.get("/healthz").status_code == 200  # served while the question is being answered
    worker.join(timeout=180)  # a generous bound; before the fix the first one ran for many minutes
    assert not worker.is_alive(), "the calculation did not finish"
    r = result["r"]
    assert r.status_code == 200, r.text
    body = r.json()
    steps = [st for st in body["trace"] if st["step"] == "THINK.skill"]
    assert steps and steps[0]["tool"] == "calculations", body["trace"]
    assert steps[0]["result"]["refused"] in ("calculation_refused", "calculation_error"), steps
    assert "refused" in body["answer"], body["answer"]


def test_a_refused_calculation_streams_a_complete_answer(client, tenant):
    r = client.post("/v1/chat", json={"message": "Calculate 1*(((9^99)^99)^99)^99"},
                    headers={**_h(tenant), "Accept": "text/event-stream"})
    events = _sse(r.text)
    assert events[0][0] == "start" and events[-1][0] == "done", events
    assert "refused" in "".join(e[1]["text"] for e in events if e[0] == "delta")


def test_an_unexpected_failure_mid_stream_ends_with_an_error_event(app, client, tenant):
    from serving.deps import current_principal

    # A principal whose tenant row does not exist: the database refuses the conversation (a foreign
    # key), an error that is not a PlatformError, raised after the stream has started.
    ghost = Principal("alice", uuid.uuid4(), "ghost", Role.operator, ("qa",))
    app.dependency_overrides[current_principal] = lambda: ghost
    try:
        r = client.post("/v1/chat", json={"message": "Which oil does the press use?"},
                        headers={**_h(tenant), "Accept": "text/event-stream"})
    finally:
        app.dependency_overrides.clear()
    assert r.status_code == 200
    events = _sse(r.text)
    assert events[0][0] == "start"
    assert events[-1][0] == "error", events
    assert events[-1][1] == {"code": "internal_error", "message": "internal server error", "details": {}}


def test_an_unexpected_error_is_a_json_500_and_not_re_raised(app, tenant):
    from serving.deps import current_principal

    def boom() -> Principal:
        raise RuntimeError("unexpected")

    app.dependency_overrides[current_principal] = boom
    try:
        # raise_server_exceptions=True: had the exception left the app (which makes uvicorn reset the
        # connection after the 500), this call would raise instead of returning the response.
        with TestClient(app, raise_server_exceptions=True, client=("10.12.0.2", 40000)) as c:
            r = c.get("/v1/conversations", headers=_h(tenant))
            assert r.status_code == 500
            assert r.json() == {"error": {"code": "internal_error", "message": "internal server error",
                                          "details": {}}}
            app.dependency_overrides.clear()
            assert c.get("/v1/conversations", headers=_h(tenant)).status_code == 200  # same client, still fine
    finally:
        app.dependency_overrides.clear()


# --------------------------------------------------------------------------- finding 10: bodies


class _Body:
    """An ASGI request body of `total` bytes in 1 MiB chunks that counts what the app pulled."""

    def __init__(self, total: int, chunk: int = 1024 * 1024, prefix: bytes = b"") -> None:
        self.total, self.chunk, self.pulled, self.prefix = total, chunk, 0, prefix
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.pulled >= self.total:
            await anyio.sleep(3600)  # a client waiting for the answer
        n = min(self.chunk, self.total - self.pulled)
        data = (self.prefix + b"x" * n)[:n] if self.pulled == 0 else b"x" * n
        self.pulled += n
        return {"type": "http.request", "body": data, "more_body": self.pulled < self.total}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def json(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


def _call(app, method: str, path: str, body: _Body, headers: dict[str, str]) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("10.12.0.3", 40000), "server": ("testserver", 80)}

    async def run() -> None:
        with anyio.fail_after(120):
            await app(scope, body.receive, body.send)

    anyio.run(run)


MULTIPART = "multipart/form-data; boundary=xyz"
FILE_PART = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
             b"Content-Type: text/plain\r\n\r\n")


def test_an_upload_without_a_token_is_refused_before_a_byte_is_read(app, platform_db):
    body = _Body(400 * 1024 * 1024, prefix=FILE_PART)
    _call(app, "POST", "/v1/documents", body, {"content-type": MULTIPART})  # chunked: no Content-Length
    assert body.status == 401 and body.json["error"]["code"] == "missing_token"
    assert body.pulled == 0
    body = _Body(400 * 1024 * 1024)
    _call(app, "POST", "/v1/documents", body, {"content-type": MULTIPART, "authorization": "Bearer forged.x.y"})
    assert body.status == 401 and body.pulled == 0


def test_bodies_over_the_limit_are_refused_before_they_are_read(app, tenant):
    auth = _h(tenant)["Authorization"]
    big = _Body(400 * 1024 * 1024)
    _call(app, "POST", "/v1/documents", big,
          {"content-type": MULTIPART, "content-length": str(big.total), "authorization": auth})
    assert big.status == 413 and big.json["error"]["code"] == "file_too_large" and big.pulled == 0
    js = _Body(100 * 1024 * 1024)
    _call(app, "POST", "/v1/chat", js, {"content-type": "application/json", "content-length": str(js.total)})
    assert js.status == 413 and js.json["error"]["code"] == "request_too_large" and js.pulled == 0  # before auth
    # Chunked (no Content-Length): counted, and cut off at the limit.
    chunked = _Body(100 * 1024 * 1024)
    _call(app, "POST", "/v1/chat", chunked, {"content-type": "application/json", "authorization": auth})
    limit = get_settings().max_json_body_bytes
    assert chunked.status == 413 and chunked.pulled <= limit + chunked.chunk
    upload = _Body(400 * 1024 * 1024, prefix=FILE_PART)
    _call(app, "POST", "/v1/documents", upload, {"content-type": MULTIPART, "authorization": auth})
    assert upload.status == 413 and upload.pulled <= get_settings().max_upload_bytes + 2 * upload.chunk


# --------------------------------------------------------------------------- finding 10: login


def _login(client, tenant_name, user, pw, totp=None):
    body = {"tenant": tenant_name, "username": user, "password": pw}
    if totp:
        body["totp"] = totp
    return client.post("/v1/auth/login", json=body)


def _shape(r) -> tuple[int, str, str]:
    e = r.json()["error"]
    return r.status_code, e["code"], re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "<time>", e["message"])


@pytest.fixture
def roomy_ip_limit(monkeypatch):
    monkeypatch.setenv("EAP_LOGIN_RATE_LIMIT_IP_PER_MINUTE", "1000")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_locked_unknown_accounts_and_unknown_tenants_answer_identically(client, make_tenant, roomy_ip_limit):
    t = make_tenant("lock")
    set_local_password(t, "lena", Role.viewer, "lena's long password")
    kinds = {"real": (t.name, "lena"), "unknown user": (t.name, "nobody"),
             "unknown tenant": (f"none-{uuid.uuid4().hex[:8]}", "lena")}
    answers: dict[str, list] = {k: [] for k in kinds}
    for kind, (tenant_name, user) in kinds.items():
        for _ in range(get_settings().login_max_failures + 1):
            answers[kind].append(_shape(_login(client, tenant_name, user, "a wrong password")))
        answers[kind].append(_shape(_login(client, tenant_name, user, "lena's long password")))
    assert answers["real"] == answers["unknown user"] == answers["unknown tenant"], answers
    assert answers["real"][0][:2] == (401, "invalid_credentials")
    assert answers["real"][-1][:2] == (423, "account_locked")  # locked: even the right password is refused


def test_mfa_answer_does_not_reveal_the_password_and_totp_is_single_use(client, make_tenant, roomy_ip_limit):
    t = make_tenant("mfa")
    enrol = set_local_password(t, "root", Role.admin, "correct horse battery staple")
    secret = pyotp.parse_uri(enrol.totp_uri).secret
    right = _login(client, t.name, "root", "correct horse battery staple")
    wrong = _login(client, t.name, "root", "not the password")
    assert right.status_code == wrong.status_code == 401 and right.json() == wrong.json()
    code = pyotp.TOTP(secret).now()
    first = _login(client, t.name, "root", "correct horse battery staple", code)
    assert first.status_code == 200, first.text
    replay = _login(client, t.name, "root", "correct horse battery staple", code)
    assert replay.status_code == 401 and replay.json() == wrong.json()
    from sqlalchemy import text

    from core.db.database import tenant_session

    with tenant_session(t.id) as s:
        last = s.execute(text("SELECT details->>'reason' FROM audit_events WHERE action = 'auth.login' "
                              "AND outcome = 'failure' ORDER BY seq DESC LIMIT 1")).scalar()
    assert last == "totp_replayed"


def test_login_is_rate_limited_per_username_and_per_ip(app, make_tenant, monkeypatch):
    t = make_tenant("rl")
    monkeypatch.setenv("EAP_LOGIN_RATE_LIMIT_USER_PER_MINUTE", "3")
    monkeypatch.setenv("EAP_LOGIN_RATE_LIMIT_IP_PER_MINUTE", "5")
    get_settings.cache_clear()
    try:
        with TestClient(app, client=("10.12.0.9", 40000)) as c:
            codes = [_login(c, t.name, "ursula", "wrong password").status_code for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            r = _login(c, t.name, "ursula", "wrong password")
            assert r.json()["error"]["code"] == "login_rate_limited" and int(r.headers["Retry-After"]) >= 1
            # Other usernames from the same address: the per-IP budget (5) is now spent.
            codes = [_login(c, t.name, f"user{i}", "wrong password").status_code for i in range(3)]
            assert 429 in codes
        with TestClient(app, client=("10.12.0.10", 40000)) as other:  # another address is not affected
            assert _login(other, t.name, "someone", "wrong password").status_code == 401
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------- finding 12: errors


def test_a_token_for_a_tenant_that_does_not_exist_is_401_everywhere(client):
    from identity.tenancy import TenantRef

    ghost = _h(TenantRef(uuid.uuid4(), "ghost"))
    calls = [("GET", "/v1/me", None), ("GET", "/v1/conversations", None), ("GET", "/v1/documents", None),
             ("POST", "/v1/chat", {"message": "hello"}), ("POST", "/v1/search", {"query": "oil"}),
             ("GET", "/v1/memories", None), ("POST", "/v1/memories", {"type": "FACT", "content": "x"}),
             ("GET", "/v1/goals", None), ("POST", "/v1/goals", {"text": "less scrap"}),
             ("POST", "/v1/feedback", {"message_id": str(uuid.uuid4()), "rating": "up"}),
             ("GET", "/v1/alerts", None), ("GET", "/v1/usage", None), ("GET", "/v1/index/versions", None)]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=ghost)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unknown_tenant", (path, r.json())


def test_nul_bytes_in_text_fields_are_422_not_500(client, tenant):
    h = _h(tenant)
    calls = [("POST", "/v1/chat", {"message": "oil\x00change"}),
             ("POST", "/v1/search", {"query": "oil\x00"}),
             ("POST", "/v1/search", {"query": "oil", "filters": {"section": "\x00"}}),
             ("POST", "/v1/auth/login", {"tenant": tenant.name, "username": "ro\x00ot", "password": "x" * 12}),
             ("PUT", "/v1/alert-rules", {"rules": [{"name": "down\x00time", "kind": "downtime_minutes",
                                                    "threshold": 30}]}),
             ("POST", "/v1/feedback", {"message_id": str(uuid.uuid4()), "rating": "down", "comment": "bad\x00"}),
             ("POST", "/v1/memories", {"type": "FACT", "content": "\x00"}),
             ("POST", "/v1/goals", {"text": "less\x00scrap"})]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=h)
        assert r.status_code == 422, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == "validation_error", (path, err)
        assert [e["type"] for e in err["details"]["errors"]] == ["nul_byte"], (path, err)
        assert err["details"]["errors"][0]["loc"][0] == "body"
    r = client.post("/v1/chat", json={"message": "oil\x00change"}, headers=h)
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "message"]
    r = client.get("/v1/documents?status=%00", headers=h)
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0] == {
        "loc": ["query"], "msg": "text cannot contain NUL (0x00) characters", "type": "nul_byte"}
    # A number beyond the database column's range (found by the fuzzing pass) is a 422 too.
    r = client.get(f"/v1/documents?offset={10**30}", headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
    assert r.json()["error"]["details"]["errors"][0]["type"] == "value_out_of_range"
    # A NUL the request guard cannot see (a multipart form field) is refused by the database layer.
    r = client.post("/v1/documents", headers=h, files={"file": ("nul.txt", b"plain text about oil")},
                    data={"classification": "II", "title": "ti\x00tle"})
    assert r.status_code == 422, r.text


def test_long_file_names_keep_their_extension(client, tenant):
    name = "a" * 300 + ".txt"
    r = client.post("/v1/documents", headers=_h(tenant), files={"file": (name, b"Hydraulic oil HLP 46 notes.")},
                    data={"classification": "II"})
    assert r.status_code in (200, 202), r.text
    doc = client.get(f"/v1/documents/{r.json()['document_id']}", headers=_h(tenant)).json()
    assert doc["filename"].endswith(".txt") and len(doc["filename"]) == 255


def test_eap_home_pointing_at_a_file_is_one_line(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    env = {**os.environ, "EAP_HOME": str(f)}
    for argv in (["tenant", "create", "x"], ["up", "--api-port", "1", "--dagster-port", "2"]):
        r = subprocess.run([EAP, *argv], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "EAP_HOME" in r.stderr and "not a directory" in r.stderr
