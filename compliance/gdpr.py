"""GDPR requests of data subjects (Articles 15, 17 and 20), persisted and processed by the pipeline.

A request (`submit`) is made by the data subject, or by a compliance officer on their behalf; it is `received`
with a deadline 30 days later, claimed by the Dagster job `process_gdpr_requests` (`processing`) and ends
`completed`, `refused` (with the reason, e.g. a destruction hold) or `failed`. Every transition is an audit record.

- access: a readable HTML page and a JSON document of everything held about the person in the tenant: profile,
  conversations with their messages, memories, goals and plans, feedback, usage, agent runs, uploaded documents
  (metadata), audit entries about them and their GDPR requests;
- portability: the data they provided, machine-readable (JSON);
- erasure: the person's content is removed (messages of their conversations, memories, goals, plans, traces,
  feedback comments) and they are replaced everywhere else by a keyed pseudonym (`erased:…`) while the records
  stay: usage and feedback keep their numbers, the audit trail keeps every record with actor, resource and
  details pseudonymised under its keyed chain (compliance/audit/ `pseudonymise`), their account is disabled
  and stripped of name, e-mail and credentials, earlier exports are deleted. Any column of a tenant table that
  holds exactly one of their identifiers is pseudonymised too; a final scan of every text and JSON column of
  every tenant table reports what still mentions them (`residual`). Refused while a destruction hold covers the
  tenant, the person, one of their conversations or one of their documents.

Just over 400 lines on purpose: what access exports (`collect`) and what erasure removes or pseudonymises
(`erase`, `residual`) are two readings of the same list of tables and of the person's identifiers; kept side by
side, a table added to one is seen missing from the other.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
import json
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance import audit, holds
from core.db.database import rowcount
from core.errors import InvalidInput, NotFound
from core.settings import get_settings

DEADLINE_DAYS = 30
ERASED = "[erased]"


class RequestKind(enum.StrEnum):
    access = "access"
    erasure = "erasure"
    portability = "portability"


class RequestStatus(enum.StrEnum):
    received = "received"
    processing = "processing"
    completed = "completed"
    refused = "refused"
    failed = "failed"


@dataclass(frozen=True)
class GdprRequest:
    id: uuid.UUID
    tenant_id: uuid.UUID
    subject: str
    kind: str
    status: str
    requested_by: str
    requested_by_role: str | None
    on_behalf: bool
    reason: str | None
    received_at: dt.datetime
    due_at: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    result: dict[str, Any]
    export_dir: str | None

    @property
    def overdue(self) -> bool:
        return self.status in (RequestStatus.received, RequestStatus.processing) and \
            self.due_at < dt.datetime.now(dt.UTC)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overdue": self.overdue}


_COLUMNS = ("id, tenant_id, subject, kind, status, requested_by, requested_by_role, on_behalf, reason, received_at, "
            "due_at, started_at, completed_at, result, export_dir")


def _req(row: Any) -> GdprRequest:
    return GdprRequest(**dict(row._mapping))


def submit(session: Session, tenant_id: uuid.UUID, *, kind: RequestKind | str, subject: str, requested_by: str,
           requested_by_role: str | None = None, reason: str | None = None) -> GdprRequest:
    """Persist a request (the caller checked that `requested_by` may ask for `subject`); audited."""
    kind = RequestKind(kind)
    subject = subject.strip()
    if not subject:
        raise InvalidInput("the data subject is required", code="subject_required")
    row = session.execute(text(
        f"INSERT INTO gdpr_requests (tenant_id, subject, kind, requested_by, requested_by_role, on_behalf, reason, "
        f"due_at) VALUES (:t, :s, :k, :by, :role, :behalf, :reason, now() + make_interval(days => {DEADLINE_DAYS})) "
        f"RETURNING {_COLUMNS}"),
        {"t": tenant_id, "s": subject, "k": kind.value, "by": requested_by, "role": requested_by_role,
         "behalf": subject != requested_by, "reason": reason}).one()
    req = _req(row)
    audit.record(session, tenant_id=tenant_id, actor=requested_by, actor_role=requested_by_role,
                 action="gdpr.request.received", resource_type="gdpr_request", resource_id=str(req.id),
                 details={"kind": kind.value, "subject": subject, "on_behalf": req.on_behalf,
                          "due_at": req.due_at.isoformat()})
    return req


def get(session: Session, request_id: uuid.UUID) -> GdprRequest:
    row = session.execute(text(f"SELECT {_COLUMNS} FROM gdpr_requests WHERE id = :i"), {"i": request_id}).one_or_none()
    if row is None:
        raise NotFound("no such GDPR request", code="gdpr_request_not_found")
    return _req(row)


def list_requests(session: Session, tenant_id: uuid.UUID, *, subject: str | None = None,
                  limit: int = 100) -> list[GdprRequest]:
    where = "tenant_id = :t" + (" AND subject = :s" if subject is not None else "")
    return [_req(r) for r in session.execute(text(f"SELECT {_COLUMNS} FROM gdpr_requests WHERE {where} "
                                                  "ORDER BY received_at DESC LIMIT :n"),
                                             {"t": tenant_id, "s": subject, "n": limit})]


def export_root() -> Path:
    s = get_settings()
    return (s.gdpr_export_dir or s.home / "gdpr-exports").expanduser()


def export_file(req: GdprRequest, fmt: str) -> Path:
    """The export of a completed access/portability request (`json` or `html`)."""
    if req.status != RequestStatus.completed or req.export_dir is None:
        raise NotFound("this request has no export (yet)", code="export_not_ready")
    # Where the pipeline writes it, not whatever the row says: a row is never a path to an arbitrary file.
    path = export_root() / str(req.tenant_id) / str(req.id) / f"export.{fmt}"
    if fmt not in ("json", "html") or not path.is_file():
        raise NotFound(f"no {fmt} export for this request", code="export_not_found")
    return path


# --------------------------------------------------------------------------- what is held about a person


def identifiers(session: Session, tenant_id: uuid.UUID, subject: str) -> list[str]:
    """The strings that identify the person in this tenant: the subject, and their account's e-mail and name."""
    row = session.execute(text("SELECT email, display_name FROM users WHERE tenant_id = :t AND username = :s"),
                          {"t": tenant_id, "s": subject}).one_or_none()
    found = [subject] + ([v for v in (row.email, row.display_name) if v and v.strip()] if row else [])
    return list(dict.fromkeys(found))


def _all(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, dt.datetime) else str(v) if isinstance(v, uuid.UUID) else v)
             for k, v in r.items()} for r in session.execute(text(sql), params).mappings()]


def collect(session: Session, tenant_id: uuid.UUID, subject: str, *, portable: bool = False) -> dict[str, Any]:
    """Everything held about the person in the tenant (portable: what they provided, machine-readable)."""
    p = {"t": tenant_id, "s": subject}
    profile = _all(session, "SELECT id, username, email, display_name, role, groups, is_active, created_at "
                            "FROM users WHERE tenant_id = :t AND username = :s", p)
    conversations = _all(session, "SELECT id, title, created_at, updated_at FROM conversations "
                                  "WHERE tenant_id = :t AND user_subject = :s ORDER BY created_at", p)
    for c in conversations:
        c["messages"] = _all(session, "SELECT id, role, content, citations, created_at FROM messages "
                                      "WHERE conversation_id = :c ORDER BY created_at", {"c": c["id"]})
    out: dict[str, Any] = {
        "subject": subject, "tenant_id": str(tenant_id), "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "profile": profile[0] if profile else None,
        "conversations": conversations,
        "memories": _all(session, "SELECT id, memory_type, key, content, created_at, updated_at FROM memories "
                                  "WHERE tenant_id = :t AND user_subject = :s ORDER BY created_at", p),
        "goals": _all(session, "SELECT id, text, status, progress, created_at, closed_at FROM user_goals "
                               "WHERE tenant_id = :t AND user_subject = :s ORDER BY created_at", p),
        "feedback": _all(session, "SELECT id, message_id, rating, value, comment, created_at FROM feedback "
                                  "WHERE tenant_id = :t AND user_subject = :s ORDER BY created_at", p),
    }
    if portable:
        return out
    out.update({
        "goal_plans": _all(session, "SELECT id, goal_id, request, answer, created_at FROM goal_plans "
                                    "WHERE tenant_id = :t AND user_subject = :s ORDER BY created_at", p),
        "usage": _all(session, "SELECT created_at, agent, tier, model, prompt_tokens, completion_tokens, "
                               "cost::float AS cost FROM usage_records WHERE tenant_id = :t AND user_subject = :s "
                               "ORDER BY created_at", p),
        "agent_runs": _all(session, "SELECT id, conversation_id, specialist, model_tier, outcome, created_at "
                                    "FROM agent_runs WHERE tenant_id = :t AND user_subject = :s "
                                    "ORDER BY created_at", p),
        "documents_uploaded": _all(session, "SELECT id, title, filename, classification, status, created_at "
                                            "FROM documents WHERE tenant_id = :t AND created_by = :s", p),
        "audit_entries": _all(session, "SELECT seq, ts, actor, action, resource_type, resource_id, outcome, details "
                                       "FROM audit_events WHERE tenant_id = :t AND (actor = :s OR resource_id = :s) "
                                       "ORDER BY seq", p),
        "gdpr_requests": _all(session, "SELECT id, kind, status, received_at, due_at, completed_at "
                                       "FROM gdpr_requests WHERE tenant_id = :t AND subject = :s", p),
    })
    return out


def _html(data: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, dict | list):
            v = json.dumps(v, ensure_ascii=False, indent=1)
            return f"<pre>{html.escape(v)}</pre>"
        return html.escape("" if v is None else str(v))

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "<p><em>none</em></p>"
        cols = [c for c in rows[0] if c != "messages"]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = ""
        for r in rows:
            body += "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>"
            if "messages" in r:
                body += f"<tr><td colspan='{len(cols)}'>{table(r['messages'])}</td></tr>"
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [f"<h1>Your data: {html.escape(data['subject'])}</h1>",
             f"<p>Generated {html.escape(data['generated_at'])} for tenant {html.escape(data['tenant_id'])}.</p>"]
    if data.get("profile"):
        parts.append("<h2>Profile</h2>" + table([data["profile"]]))
    for key, value in data.items():
        if isinstance(value, list):
            parts.append(f"<h2>{html.escape(key.replace('_', ' ').capitalize())} ({len(value)})</h2>{table(value)}")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left}pre{margin:0}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Data export</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _write_export(req: GdprRequest, data: dict[str, Any], with_html: bool) -> tuple[Path, list[str]]:
    folder = export_root() / str(req.tenant_id) / str(req.id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = ["export.json"]
    (folder / "export.json").write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str))
    if with_html:
        (folder / "export.html").write_text(_html(data))
        files.append("export.html")
    for f in files:
        (folder / f).chmod(0o600)
    return folder, files


# --------------------------------------------------------------------------- erasure


def blocking_holds(session: Session, tenant_id: uuid.UUID, subject: str) -> list[holds.Hold]:
    h = holds.active(session, tenant_id)
    hit = list(h.tenant) + h.users.get(subject, [])
    p = {"t": tenant_id, "s": subject}
    for (cid,) in session.execute(text("SELECT id FROM conversations WHERE tenant_id = :t AND user_subject = :s"), p):
        hit += h.conversations.get(str(cid), [])
    for (did,) in session.execute(text("SELECT id FROM documents WHERE tenant_id = :t AND created_by = :s"), p):
        hit += h.documents.get(str(did), [])
    return hit


_SKIP_GENERIC = frozenset({"audit_events", "audit_anchors"})


def _tenant_columns(session: Session) -> list[tuple[str, str, str]]:
    """(table, column, data type) of every text/JSON column of every table with a tenant_id column."""
    return [(r.table_name, r.column_name, r.data_type) for r in session.execute(text(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY') "
        "AND EXISTS (SELECT 1 FROM information_schema.columns k WHERE k.table_schema = 'public' "
        "            AND k.table_name = c.table_name AND k.column_name = 'tenant_id') "
        "ORDER BY c.table_name, c.ordinal_position"))]


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def residual(session: Session, tenant_id: uuid.UUID, idents: list[str]) -> dict[str, int]:
    """{table.column: rows} of the tenant's text, JSON and array columns that still contain one of `idents`."""
    found: dict[str, int] = {}
    for table, col, _kind in _tenant_columns(session):
        n = int(session.execute(text(
            f"SELECT count(*) FROM {_q(table)} WHERE tenant_id = :t AND EXISTS (SELECT 1 FROM unnest(CAST(:ids AS "
            f"text[])) i(v) WHERE strpos({_q(col)}::text, i.v) > 0)"), {"t": tenant_id, "ids": idents}).scalar_one())
        if n:
            found[f"{table}.{col}"] = n
    return found


def erase(session: Session, tenant_id: uuid.UUID, subject: str) -> dict[str, Any]:
    """Anonymise the person everywhere in the tenant (the caller checked holds; the pipeline's identity: the audit
    trail is pseudonymised through `audit_redact`). Returns what was done, with the residual scan."""
    idents = identifiers(session, tenant_id, subject)
    alias = audit.pseudonym(tenant_id, subject)
    p = {"t": tenant_id, "s": subject, "p": alias, "x": ERASED}
    done: dict[str, int] = {}

    def run(label: str, sql: str) -> None:
        done[label] = done.get(label, 0) + rowcount(session.execute(text(sql), p))

    conv = "SELECT id FROM conversations WHERE tenant_id = :t AND user_subject = :s"
    run("messages", f"UPDATE messages SET content = :x, citations = '[]', metadata = '{{}}' WHERE tenant_id = :t "
                    f"AND conversation_id IN ({conv})")
    run("conversations", "UPDATE conversations SET title = NULL, user_subject = :p WHERE tenant_id = :t "
                         "AND user_subject = :s")
    run("memories", "DELETE FROM memories WHERE tenant_id = :t AND user_subject = :s")
    run("goal_plans", "UPDATE goal_plans SET request = :x, answer = :x, steps = '[]', citations = '[]', "
                      "user_subject = :p WHERE tenant_id = :t AND user_subject = :s")
    run("goals", "UPDATE user_goals SET text = :x, progress = '[]', embedding = NULL, user_subject = :p "
                 "WHERE tenant_id = :t AND user_subject = :s")
    run("feedback", "UPDATE feedback SET user_subject = :p, comment = NULL WHERE tenant_id = :t AND user_subject = :s")
    run("usage", "UPDATE usage_records SET user_subject = :p WHERE tenant_id = :t AND user_subject = :s")
    run("agent_runs", "UPDATE agent_runs SET user_subject = :p, trace = '[]' WHERE tenant_id = :t "
                      "AND user_subject = :s")
    run("agent_lessons", "UPDATE agent_lessons SET user_subject = :p, approach = '{}', question_embedding = NULL "
                         "WHERE tenant_id = :t AND user_subject = :s")
    run("account", "UPDATE users SET username = :p, email = NULL, display_name = NULL, password_hash = NULL, "
                   "totp_secret = NULL, groups = '{}', is_active = false WHERE tenant_id = :t AND username = :s")
    # Anything else that holds exactly one of their identifiers (columns added by other features included).
    for table, col, kind in _tenant_columns(session):
        if table in _SKIP_GENERIC:
            continue
        for ident in idents:
            if kind in ("text", "character varying"):
                sql = (f"UPDATE {_q(table)} SET {_q(col)} = :alias WHERE tenant_id = :t AND {_q(col)} = :ident")
            elif kind in ("jsonb", "json"):
                sql = (f"UPDATE {_q(table)} SET {_q(col)} = CAST(replace({_q(col)}::text, :jident, :jalias) AS {kind}) "
                       f"WHERE tenant_id = :t AND strpos({_q(col)}::text, :jident) > 0")
            else:
                sql = (f"UPDATE {_q(table)} SET {_q(col)} = array_replace({_q(col)}, CAST(:ident AS text), "
                       f"CAST(:alias AS text)) WHERE tenant_id = :t AND CAST(:ident AS text) = ANY({_q(col)}::text[])")
            try:
                with session.begin_nested():
                    n = rowcount(session.execute(text(sql), {"t": tenant_id, "ident": ident, "alias": alias,
                                                             "jident": json.dumps(ident, ensure_ascii=False),
                                                             "jalias": json.dumps(alias)}))
            except Exception:  # noqa: BLE001 - a column this cannot rewrite (constraint, type) is left to the scan
                n = 0
            if n:
                done[f"{table}.{col}"] = done.get(f"{table}.{col}", 0) + int(n)
    done["audit_events"] = audit.pseudonymise(session, tenant_id, idents)
    # Transient state keyed by the subject outside the tenant tables: the API's rate-limit buckets (serving/
    # ratelimit.py, keys `user:<tenant id>:<subject>` and `login-user:<tenant>:<username>`).
    if session.execute(text("SELECT to_regclass('rate_limit_buckets')")).scalar() is not None:
        done["rate_limit_buckets"] = rowcount(session.execute(text(
            "DELETE FROM rate_limit_buckets WHERE key = 'user:' || CAST(:t AS text) || ':' || :s "
            "OR (starts_with(key, 'login-user:') AND right(key, length(:s) + 1) = ':' || :s)"), p))
    removed = 0
    for (folder,) in session.execute(text("SELECT export_dir FROM gdpr_requests WHERE tenant_id = :t AND "
                                          "export_dir IS NOT NULL AND (subject = ANY(:ids) OR subject = :p)"),
                                     {"t": tenant_id, "ids": idents, "p": alias}):
        if Path(folder).is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    session.execute(text("UPDATE gdpr_requests SET export_dir = NULL WHERE tenant_id = :t AND subject = :p "
                         "AND export_dir IS NOT NULL"), p)
    done["exports_deleted"] = removed
    return {"pseudonym": alias, "changed": {k: v for k, v in done.items() if v},
            "residual": residual(session, tenant_id, idents)}


# --------------------------------------------------------------------------- processing (pipeline identity)


def claim_pending(session: Session, limit: int = 50) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant id, request id) of received requests, marked `processing` (owner role)."""
    rows = session.execute(text(
        "UPDATE gdpr_requests SET status = 'processing', started_at = now() WHERE id IN ("
        " SELECT id FROM gdpr_requests WHERE status = 'received' ORDER BY received_at LIMIT :n "
        " FOR UPDATE SKIP LOCKED) RETURNING tenant_id, id"), {"n": limit}).all()
    for tenant_id, rid in rows:
        audit.record(session, tenant_id=tenant_id, actor="system", action="gdpr.request.processing",
                     resource_type="gdpr_request", resource_id=str(rid))
    return [(r[0], r[1]) for r in rows]


def _finish(session: Session, req: GdprRequest, status: RequestStatus, result: dict[str, Any],
            export_dir: str | None = None) -> GdprRequest:
    row = session.execute(text(f"UPDATE gdpr_requests SET status = :st, completed_at = now(), result = "
                               f"CAST(:r AS jsonb), export_dir = :d WHERE id = :i RETURNING {_COLUMNS}"),
                          {"st": status.value, "r": json.dumps(result, default=str), "d": export_dir,
                           "i": req.id}).one()
    audit.record(session, tenant_id=req.tenant_id, actor="system", action=f"gdpr.request.{status.value}",
                 resource_type="gdpr_request", resource_id=str(req.id),
                 outcome="success" if status is RequestStatus.completed else status.value,
                 details={"kind": req.kind, **{k: v for k, v in result.items() if k in ("counts", "reason", "files",
                                                                                       "changed", "residual")}})
    return _req(row)


def process(session: Session, request_id: uuid.UUID) -> GdprRequest:
    """Fulfil one claimed request in the caller's transaction (the pipeline's identity)."""
    req = get(session, request_id)
    kind = RequestKind(req.kind)
    if kind is RequestKind.erasure:
        blocking = blocking_holds(session, req.tenant_id, req.subject)
        if blocking:
            return _finish(session, req, RequestStatus.refused, {
                "reason": "a destruction hold applies: " + "; ".join(h.describe() for h in blocking),
                "holds": [str(h.id) for h in blocking]})
        outcome = erase(session, req.tenant_id, req.subject)
        alias = outcome["pseudonym"]
        session.execute(text("UPDATE gdpr_requests SET subject = :p, requested_by = CASE WHEN requested_by = :s "
                             "THEN :p ELSE requested_by END, reason = NULL WHERE tenant_id = :t "
                             "AND (subject = :s OR subject = :p)"), {"p": alias, "s": req.subject, "t": req.tenant_id})
        return _finish(session, get(session, request_id), RequestStatus.completed,
                       {"changed": outcome["changed"], "residual": outcome["residual"]})
    data = collect(session, req.tenant_id, req.subject, portable=kind is RequestKind.portability)
    folder, files = _write_export(req, data, with_html=kind is RequestKind.access)
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return _finish(session, req, RequestStatus.completed, {"counts": counts, "files": files}, str(folder))


def fail(session: Session, request_id: uuid.UUID, error: str) -> GdprRequest:
    return _finish(session, get(session, request_id), RequestStatus.failed, {"reason": error})
