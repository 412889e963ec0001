"""Real test documents built at run time (no binary fixtures in the repo)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from core.models import Role


def text_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF with a real text layer (Helvetica), one list of lines per page."""
    objs: list[bytes] = []
    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{p} 0 R" for p in page_ids).encode()
    objs.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(n_pages).encode() + b" >>")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        content = b"BT /F1 12 Tf 72 720 Td 16 TL\n"
        for ln in lines:
            esc = ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
            content += b"(" + esc + b") Tj T*\n"
        content += b"ET"
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents " + str(page_ids[i] + 1).encode() + b" 0 R >>"
        )
        objs.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{num} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def text_image(lines: list[str], fmt: str = "PNG") -> bytes:
    """A 'scan': text rendered into pixels only, so only OCR can read it."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1240, 120 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=36)
    for i, line in enumerate(lines):
        draw.text((60, 60 + i * 70), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def docx_bytes(title: str, sections: list[tuple[str, list[str]]], table: list[list[str]] | None = None) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(title, 0)
    for heading, paras in sections:
        d.add_heading(heading, 1)
        for p in paras:
            d.add_paragraph(p)
    if table:
        t = d.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, val in enumerate(row):
                t.cell(r, c).text = val
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


class LoopbackEmbeddings:
    """An OpenAI-compatible embeddings endpoint on 127.0.0.1 (standing in for Ollama/vLLM): `vector`
    maps each input text to its embedding; `calls` records (path, model, number of inputs)."""

    def __init__(self, vector) -> None:
        import http.server
        import json
        import threading

        self.calls: list[tuple[str, str, int]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append((self.path, body["model"], len(body["input"])))
                data = [{"object": "embedding", "index": i, "embedding": vector(s)}
                        for i, s in enumerate(body["input"])]
                payload = json.dumps({"object": "list", "data": data, "model": body["model"],
                                      "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.srv.server_port}/v1"

    def __enter__(self) -> LoopbackEmbeddings:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def _bearer(tenant_id, tenant_name: str, role: str, subject: str, groups=(), roles=()) -> dict:
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings

    tok = mint_token(get_settings(), tenant_id=tenant_id, tenant=tenant_name, role=Role(role), subject=subject,
                     groups=list(groups), extra={"roles": list(roles)} if roles else None)
    return {"Authorization": f"Bearer {tok}"}


def steward_review_config(client, document_id, decision: str, reason: str, *, steward: str = "sam.steward",
                          role: str | None = None, classification: str | None = None) -> dict:
    """Run config for Dagster job `steward_review`, obtained the way a data steward obtains it: an approval
    token from `POST /v1/documents/{id}/review-token`, as a user with the steward permission and the
    document's need-to-know groups (admin for Class IV)."""
    from sqlalchemy import text

    from core.db.database import system_session

    with system_session() as s:
        row = s.execute(text("SELECT t.id, t.name, d.acl_groups, d.classification FROM documents d "
                             "JOIN tenants t ON t.id = d.tenant_id WHERE d.id = :d"), {"d": str(document_id)}).one()
    role = role or ("admin" if row.classification >= 4 else "operator")
    ensure_steward(row.id, steward, role, row.acl_groups)
    body = {"decision": decision, "reason": reason} | ({"classification": classification} if classification else {})
    r = client.post(f"/v1/documents/{document_id}/review-token", json=body,
                    headers=_bearer(row.id, row.name, role, steward, row.acl_groups, roles=("steward",)))
    assert r.status_code == 201, r.text
    return r.json()["run_config"]


def ensure_steward(tenant_id, username: str, role: str = "operator", groups=()) -> None:
    """The steward as a known, active user of the tenant with the steward permission and these groups (the
    API applies the user record to the token; the review run checks the record)."""
    import uuid

    from sqlalchemy import text

    from core.db.database import system_session

    with system_session() as s:
        s.execute(text("INSERT INTO users (id, tenant_id, username, role, groups, permissions) VALUES (:i, :t, :u, "
                       ":r, :g, ARRAY['steward']) ON CONFLICT (tenant_id, username) DO UPDATE SET role = :r, "
                       "groups = :g, permissions = ARRAY['steward'], is_active = true"),
                  {"i": uuid.uuid4(), "t": tenant_id, "u": username, "r": role, "g": list(groups)})


def finetune_export_config(client, tenant, reason: str = "quarterly fine-tuning set", admin: str = "ada.admin") -> dict:
    """Run config for the `finetune_dataset` asset: an export token from `POST /v1/finetune/export-token`
    as a tenant admin."""
    r = client.post("/v1/finetune/export-token", json={"reason": reason},
                    headers=_bearer(tenant.id, tenant.name, "admin", admin))
    assert r.status_code == 201, r.text
    return r.json()["run_config"]


def run_intake(instance, state: dict) -> list:
    """One tick of the `document_intake` sensor on a Dagster `instance`, then every `ingest_documents` run it
    requested, in process (as the daemon launches them); `state["cursor"]` carries the sensor cursor."""
    import dagster as dg

    import definitions
    from sensors.ingestion import document_intake

    db = definitions.defs.resources["db"]
    res = document_intake(dg.build_sensor_context(instance=instance, cursor=state.get("cursor"), resources={"db": db}))
    if isinstance(res, dg.SkipReason):
        return []
    state["cursor"] = res.cursor
    for req in res.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
    job = definitions.defs.resolve_job_def("ingest_documents")
    return [job.execute_in_process(instance=instance, tags=rr.tags, partition_key=rr.partition_key,
                                   resources={"db": db}) for rr in res.run_requests]


# --------------------------------------------------------------------------- agents and the model seam


def agent_deps(session, caller, subject: str = "u", *, tenant_id=None, scripted=None, model=None):
    """AgentDeps for a test: the caller's role and groups (a retrieval `Caller`), and as its model the
    scripted double with `scripted` replies (a reply is a string, or {"tool_calls": [...]})."""
    from agents.deps import build_deps
    from core.llm.testing import ScriptedModel

    return build_deps(session, subject=subject, role=caller.role, groups=caller.groups, tenant_id=tenant_id,
                      model=model or ScriptedModel(list(scripted or [])))


def run_agent(session, caller, subject: str, message: str, history: list[dict], *, k: int = 6,
              scripted=None, tenant_id=None, model=None):
    """orchestrator.run with the AgentDeps of `agent_deps`."""
    from agents import orchestrator

    deps = agent_deps(session, caller, subject, tenant_id=tenant_id, scripted=scripted, model=model)
    return orchestrator.run(deps, message, history, k=k)


class scripted_chat:
    """Within the block, the app's requests get the scripted double as their model (a FastAPI dependency
    override on serving.deps.get_model): `with scripted_chat(client.app, ["reply [1]"]) as model: ...`."""

    def __init__(self, app, replies: list | None = None) -> None:
        from core.llm.testing import ScriptedModel

        self.app, self.model = app, ScriptedModel(list(replies or []))

    def __enter__(self):
        from serving.deps import get_model

        self.app.dependency_overrides[get_model] = lambda: self.model
        return self.model

    def __exit__(self, *exc) -> None:
        from serving.deps import get_model

        self.app.dependency_overrides.pop(get_model, None)


# --------------------------------------------------------------------------- requests, documents and the index


def bearer(t, user: str, role=None, groups=()) -> dict:
    """Authorization header for `user` in tenant `t` (operator unless `role` is given)."""
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings

    role = role or Role.operator
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role,
                                                    subject=user, groups=list(groups))}


def post_chat(client, t, user: str, message: str, role=None, groups=(), conversation_id=None) -> dict:
    """POST /v1/chat as `user`; asserts 200 and returns the body."""
    body = {"message": message} | ({"conversation_id": conversation_id} if conversation_id else {})
    r = client.post("/v1/chat", json=body, headers=bearer(t, user, role, groups))
    assert r.status_code == 200, r.text
    return r.json()


def upload_headers(tenant, role=None, groups=("qa",)) -> dict:
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings

    role = role or Role.operator
    tok = mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name, role=role, subject=f"{role.value}@t",
                     groups=list(groups))
    return {"Authorization": f"Bearer {tok}"}


def upload_file(client, tenant, name: str, data: bytes, role=None, **form):
    """POST /v1/documents with one file, as an operator of the qa group unless `role` is given."""
    return client.post("/v1/documents", files={"file": (name, data)}, data=form, headers=upload_headers(tenant, role))


def document_row(tenant_id, doc_id):
    """The `documents` row, read under the tenant's RLS session."""
    from sqlalchemy import text

    from core.db.database import tenant_session

    with tenant_session(tenant_id) as s:
        return s.execute(text("SELECT * FROM documents WHERE id = :i"), {"i": str(doc_id)}).mappings().one()


def chunk_rows(tenant_id, doc_id):
    """The document's chunks in order, with their index columns."""
    from sqlalchemy import text

    from core.db.database import tenant_session

    with tenant_session(tenant_id) as s:
        return s.execute(
            text("SELECT id, text, page, section, classification, acl_groups, embedding_dim, vector_dims(embedding) "
                 "AS dims, embedding_model, lexical_len, index_version FROM chunks WHERE document_id = :i "
                 "ORDER BY ordinal"), {"i": str(doc_id)}).mappings().all()


def index_document(tenant, name: str, cls: int, acl: list, body: str, vector=None):
    """Write a document straight into the index through the pipeline's own index writer."""
    import uuid

    import numpy as np

    from core.db.database import tenant_session
    from core.embedding import get_embedder
    from core.models import Document
    from ingestion.chunking import ChunkDraft
    from ingestion.store import DocumentJob
    from retrieval.writer import write_index

    doc_id = uuid.uuid4()
    with tenant_session(tenant.id) as s:
        s.add(Document(id=doc_id, tenant_id=tenant.id, source_key=f"t:{name}:{doc_id}", title=name,
                       filename=f"{name}.txt", content_hash=f"h-{doc_id}", storage_path="/dev/null", format="txt",
                       declared_classification=cls, classification=cls, acl_groups=acl, status="parsing",
                       review_status="approved" if cls >= 3 else None))
    job = DocumentJob(doc_id, tenant.id, f"{name}.txt", name, f"h-{doc_id}", "/dev/null", cls, cls, acl,
                      "parsing", None, None)
    vec = vector if vector is not None else get_embedder().embed([body])[0]
    chunk = ChunkDraft(0, body, 1, name, 20, "x", {})
    assert write_index(job, [chunk], np.asarray([vec]), "sentence-transformers/all-MiniLM-L6-v2") == "indexed"
    return doc_id


CORPUS_A = {
    "oil": (1, [], "Press P3 maintenance: change the hydraulic oil HLP 46 every 4000 operating hours."),
    "weld": (2, [], "Weld porosity on bracket BR-220 was caused by low shielding gas flow of 9 l/min."),
    "heat": (3, ["qa"], "Heat treatment recipe HT-5: anneal the housings at 540 C for four hours."),
    "alloy": (3, ["rnd"], "Alloy formula R-9 for the valve body contains four percent nickel."),
    "export": (4, ["qa"], "Restricted: servo controller firmware signing procedure for export item X-1."),
}
CORPUS_B = {"b-oil": (1, [], "Press P3 maintenance at plant B: change the hydraulic oil HLP 68 every 3000 hours.")}
QUERIES = ["hydraulic oil change interval for press P3", "weld porosity shielding gas", "anneal housings recipe",
           "alloy nickel formula valve body", "firmware signing procedure export", "press maintenance"]
# (role, groups) pairs that cover the access matrix of CORPUS_A.
CALLERS = [
    (Role.viewer, ()), (Role.viewer, ("qa", "rnd")), (Role.operator, ()), (Role.operator, ("qa",)),
    (Role.operator, ("rnd",)), (Role.admin, ()), (Role.admin, ("qa",)), (Role.admin, ("qa", "rnd")),
]


def index_two_tenant_corpus(prefix: str):
    """Tenant A with CORPUS_A, tenant B with CORPUS_B, indexed through the pipeline's index writer."""
    import uuid

    from identity.tenancy import create_tenant

    a, _ = create_tenant(f"{prefix}a-{uuid.uuid4().hex[:8]}")
    b, _ = create_tenant(f"{prefix}b-{uuid.uuid4().hex[:8]}")
    ids = {}
    for t, corpus in ((a, CORPUS_A), (b, CORPUS_B)):
        for name, (cls, acl, body) in corpus.items():
            ids[index_document(t, name, cls, acl, body)] = (t.id, name, cls, acl)
    return a, b, ids


MANUAL = ("Press P3 uses hydraulic oil HLP 46. Change the hydraulic oil of press P3 every 4000 operating hours. "
          "Check the hydraulic oil level of press P3 daily before the shift. Replace the hydraulic oil filter of "
          "press P3 at every oil change. Fill hydraulic oil into press P3 only from clean, labelled containers.")
WELD = "Weld porosity on bracket BR-220 was caused by low shielding gas flow of 9 l/min; raise it to 14 l/min."
RECIPE = "Heat treatment recipe HT-5: anneal the housings at 540 C for four hours, then cool them in still air."


def index_plant(t):
    """A small plant corpus: an open manual and weld report, and a Class III recipe for the qa group."""
    index_document(t, "P3 manual", 2, [], MANUAL)
    index_document(t, "weld report", 2, [], WELD)
    index_document(t, "HT-5 recipe", 3, ["qa"], RECIPE)
    return t


def answer_citing(t, user: str, doc_id, chunk_id):
    """An assistant message in `user`'s conversation that cited the given chunk (as /v1/chat stores it)."""
    import uuid

    from core.db.database import tenant_session
    from core.models import Conversation, Message

    with tenant_session(t.id) as s:
        conv = Conversation(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, title="q")
        s.add(conv)
        s.flush()
        mid = uuid.uuid4()
        s.add(Message(id=mid, tenant_id=t.id, conversation_id=conv.id, role="assistant", content="answer [1]",
                      citations=[{"n": 1, "document_id": str(doc_id), "chunk_id": str(chunk_id), "score": 0.03,
                                  "title": "x", "page": 1, "section": None}]))
    return mid


# --------------------------------------------------------------------------- loopback servers and processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """A webhook receiver on 127.0.0.1: `posts` holds every JSON body posted to `url`."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        self.posts: list[dict] = []
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_port}/hook"


# --------------------------------------------------------------------------- end-to-end: `eap up` in a subprocess

EAP = str(Path(sys.executable).parent / "eap")


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(  # noqa: S310 - loopback http only (asserted above)
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Instance:
    """One `eap up` under its own EAP_HOME on free ports; `token` is the admin token it prints when ready."""

    def __init__(self, home: Path, *extra: str) -> None:
        import os
        import subprocess
        import threading

        self.home = home
        self.api_port, self.dagster_port = free_port(), free_port()
        env = os.environ.copy()
        env["EAP_HOME"] = str(home)
        self.proc = subprocess.Popen(
            [EAP, "up", "--api-port", str(self.api_port), "--dagster-port", str(self.dagster_port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: list[str] = []
        self.token: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("EAP_ADMIN_TOKEN="):
                self.token = line.split("=", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 240) -> None:
        assert self._ready.wait(timeout), "eap up did not print a token in time:\n" + "\n".join(self.lines)
        assert self.token, "eap up exited before becoming ready:\n" + "\n".join(self.lines)

    def stop(self) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class live_app:
    """The app factory on a real uvicorn server on 127.0.0.1 (lifespan included) in a thread:
    `with live_app() as (app, base_url): ...` (the OpenAI-compatible API, MCP and streaming tests)."""

    def __enter__(self):
        import threading
        import time

        import uvicorn

        from serving.app import create_app

        self.app = create_app()
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-live-app", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self.app, f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


# --------------------------------------------------------------------------- shared by several integration modules


def role_headers(t, subject: str, role: Role = Role.operator, roles=()) -> dict:
    """Authorization header for `subject` in tenant `t` with `role` and the extra permission `roles` claim."""
    from core.security import mint_token
    from core.settings import get_settings

    tok = mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role, subject=subject,
                     extra={"roles": list(roles)} if roles else None)
    return {"Authorization": f"Bearer {tok}"}


def officer_headers(t) -> dict:
    """Authorization header for the compliance officer `cora.compliance` of tenant `t`."""
    return role_headers(t, "cora.compliance", roles=("compliance_officer",))


def local_jwks(monkeypatch, tmp_path: Path, private_key, *, kid: str, issuer: str, audience: str) -> None:
    """Publish `private_key`'s public half as the local JWKS (JWKS_LOCAL_PATH) and configure the OIDC issuer and
    audience; the settings cache is cleared (clear it again after the test)."""
    import json

    import jwt

    from core.settings import get_settings

    jwk = json.loads(jwt.algorithms.get_default_algorithms()["RS256"].to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    monkeypatch.setenv("JWKS_LOCAL_PATH", str(path))
    monkeypatch.setenv("EAP_OIDC_ISSUER", issuer)
    monkeypatch.setenv("EAP_OIDC_AUDIENCE", audience)
    get_settings.cache_clear()


class SmtpSink:
    """An aiosmtpd server on a free loopback port collecting every message in `messages`, with EAP_SMTP_PORT
    pointing at it until `close()`."""

    def __init__(self) -> None:
        import pytest
        from aiosmtpd.controller import Controller

        from core.settings import get_settings

        self.messages: list = []
        port = free_port()
        self.smtp = Controller(self, hostname="127.0.0.1", port=port)
        self.smtp.start()
        self.mp = pytest.MonkeyPatch()
        self.mp.setenv("EAP_SMTP_PORT", str(port))
        get_settings.cache_clear()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"

    def close(self) -> None:
        from core.settings import get_settings

        self.smtp.stop()
        self.mp.undo()
        get_settings.cache_clear()


def new_plant(prefix: str):
    """A fresh tenant named `<prefix>-<random>` with the plant corpus indexed (see `index_plant`)."""
    import uuid

    from identity.tenancy import create_tenant

    return index_plant(create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}")[0])


@contextlib.contextmanager
def settings_env(env: dict[str, str]) -> Iterator[None]:
    """EAP_* (or other) variables set for a block wider than one test (module fixtures cannot use monkeypatch),
    with the settings cache cleared on the way in and out; the previous values come back after."""
    from core.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


# --------------------------------------------------------------------------- podman (tests/deploy)

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
PODMAN_ENV = dict(os.environ,
                  CONTAINERS_CONF=str(Path(__file__).resolve().parents[1] / "deploy" / "podman" / "containers.conf"))
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"


def image_present(image: str) -> bool:
    import subprocess

    try:
        return subprocess.run(["podman", "image", "exists", image], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_checked(args: list[str], *, check: bool = True, timeout: float = 600, cwd: Path | None = None):
    """A command of the container tests (podman, podman-compose) with the podman settings of these machines;
    with `check`, a failure raises with the ends of its output."""
    import subprocess

    r = subprocess.run(args, env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])}… failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def wait_migrated(migrate_container: str, logs, limit_s: float = 600) -> float:
    """Wait until a compose stack's `migrate` service exited 0 (it retries until PostgreSQL accepts connections);
    returns the deadline the caller keeps waiting against. `logs()` gives what to show on a timeout."""
    import json
    import time

    deadline = time.monotonic() + limit_s
    while True:
        state = json.loads(run_checked([*PODMAN, "inspect", migrate_container]).stdout)[0]["State"]
        if state["Status"] == "exited" and state["ExitCode"] == 0:
            return deadline
        assert time.monotonic() < deadline, (state, logs())
        time.sleep(5)


def exec_eap(container: str, *args: str, deadline: float, logs, attempts: int = 5) -> str:
    """`eap ARGS` in a compose stack's API container; its stdout. The container may not be running yet (it waits
    for the database and the migrations, and its restart policy brings it back after an exit), and on a loaded
    machine podman's DNS for the stack's network once failed to resolve "db" for a moment: so wait until the
    container runs and repeat a failed command a few times. A lasting failure raises with `logs()`."""
    import json
    import time

    for _ in range(attempts):
        while json.loads(run_checked([*PODMAN, "inspect", container]).stdout)[0]["State"]["Status"] != "running":
            assert time.monotonic() < deadline, logs()
            time.sleep(3)
        r = run_checked([*PODMAN, "exec", container, "eap", *args], check=False)
        if r.returncode == 0:
            return r.stdout
        time.sleep(5)
    raise AssertionError((args, r.returncode, r.stdout[-2000:], r.stderr[-2000:], logs()))
