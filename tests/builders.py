"""Real test documents built at run time (no binary fixtures in the repo)."""

from __future__ import annotations

import io


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

    def __init__(self, vector) -> None:  # noqa: ANN001
        import http.server
        import json
        import threading

        self.calls: list[tuple[str, str, int]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
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

            def log_message(self, *args):  # noqa: ANN002
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.srv.server_port}/v1"

    def __enter__(self) -> LoopbackEmbeddings:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.close()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def _bearer(tenant_id, tenant_name: str, role: str, subject: str, groups=(), roles=()) -> dict:  # noqa: ANN001
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings

    tok = mint_token(get_settings(), tenant_id=tenant_id, tenant=tenant_name, role=Role(role), subject=subject,
                     groups=list(groups), extra={"roles": list(roles)} if roles else None)
    return {"Authorization": f"Bearer {tok}"}


def steward_review_config(client, document_id, decision: str, reason: str, *, steward: str = "sam.steward",  # noqa: ANN001
                          role: str | None = None) -> dict:
    """Run config for Dagster job `steward_review`, obtained the way a data steward obtains it: an approval
    token from `POST /v1/documents/{id}/review-token`, as a user with the steward permission and the
    document's need-to-know groups (admin for Class IV)."""
    from sqlalchemy import text

    from core.database import system_session

    with system_session() as s:
        row = s.execute(text("SELECT t.id, t.name, d.acl_groups, d.classification FROM documents d "
                             "JOIN tenants t ON t.id = d.tenant_id WHERE d.id = :d"), {"d": str(document_id)}).one()
    role = role or ("admin" if row.classification >= 4 else "operator")
    r = client.post(f"/v1/documents/{document_id}/review-token", json={"decision": decision, "reason": reason},
                    headers=_bearer(row.id, row.name, role, steward, row.acl_groups, roles=("steward",)))
    assert r.status_code == 201, r.text
    return r.json()["run_config"]


def finetune_export_config(client, tenant, reason: str = "quarterly fine-tuning set", admin: str = "ada.admin") -> dict:  # noqa: ANN001
    """Run config for the `finetune_dataset` asset: an export token from `POST /v1/finetune/export-token`
    as a tenant admin."""
    r = client.post("/v1/finetune/export-token", json={"reason": reason},
                    headers=_bearer(tenant.id, tenant.name, "admin", admin))
    assert r.status_code == 201, r.text
    return r.json()["run_config"]


# --------------------------------------------------------------------------- agents and the model seam


def agent_deps(session, caller, subject: str = "u", *, tenant_id=None, scripted=None, model=None):  # noqa: ANN001, ANN201
    """AgentDeps for a test: the caller's role and groups (a retrieval `Caller`), and as its model the
    scripted double with `scripted` replies (a reply is a string, or {"tool_calls": [...]})."""
    from agents.deps import build_deps
    from core.llm.testing import ScriptedModel

    return build_deps(session, subject=subject, role=caller.role, groups=caller.groups, tenant_id=tenant_id,
                      model=model or ScriptedModel(list(scripted or [])))


def run_agent(session, caller, subject: str, message: str, history: list[dict], *, k: int = 6,  # noqa: ANN001, ANN201
              scripted=None, tenant_id=None, model=None):  # noqa: ANN001
    """orchestrator.run with the AgentDeps of `agent_deps`."""
    from agents import orchestrator

    deps = agent_deps(session, caller, subject, tenant_id=tenant_id, scripted=scripted, model=model)
    return orchestrator.run(deps, message, history, k=k)


class scripted_chat:  # noqa: N801 - used as a context manager, like pytest's helpers
    """Within the block, the app's requests get the scripted double as their model (a FastAPI dependency
    override on serving.deps.get_model): `with scripted_chat(client.app, ["reply [1]"]) as model: ...`."""

    def __init__(self, app, replies: list | None = None) -> None:  # noqa: ANN001
        from core.llm.testing import ScriptedModel

        self.app, self.model = app, ScriptedModel(list(replies or []))

    def __enter__(self):  # noqa: ANN204
        from serving.deps import get_model

        self.app.dependency_overrides[get_model] = lambda: self.model
        return self.model

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        from serving.deps import get_model

        self.app.dependency_overrides.pop(get_model, None)
