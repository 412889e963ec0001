"""SOC 2 evidence export: one zip per request, for one tenant and one period, that an auditor can check.

Layout (every file JSON, UTF-8, keys sorted):

    manifest.json                      format, tenant, period, who generated it and when, and per file its
                                       section, SHA-256, size and record count
    access_review/users.json           every user: role, permissions, groups, active, source, last login
                                       (credentials, TOTP secrets and key hashes are never exported)
    access_review/api_keys.json        integration keys (name, prefix, role, state) when the table exists
    access_review/summary.json         users by role and by permission, inactive users
    changes/index_versions.json        index builds, promotions, rejections and rollbacks (status, reason,
                                       evaluation, decided_at)
    changes/events.json                audit records of changes in the period: index, configuration and
                                       rules (tenant settings, alert rules), access (users, API keys), retention
    changes/models.json                the models in use: embedding model per index version (and when it
                                       changed), LLM models seen in usage in the period (first/last use)
    approvals/steward_decisions.json   data steward decisions (approved, rejected, class lowered), issued
                                       approval tokens (never the token itself) and their use
    approvals/write_approvals.json     proposed writes and their approvals, when such a table exists
    audit/verification.json            the audit chain's verification result at export time
    incidents/alerts.json              alerts in the period with their deliveries and who acknowledged or
                                       resolved them; overdue steward-review escalations
    ai_usage/usage.json                model calls by tier, model and agent (tokens, cost), answers by
                                       outcome, refused or failed requests from the audit trail

The manifest's own SHA-256 is returned to the caller and written to the audit trail (`compliance.soc2.exported`),
so a copy of the zip can later be checked against the tamper-evident record of what was exported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance import audit
from core.errors import InvalidInput, NotFound

FORMAT = "eap-soc2-evidence/1"
SECTIONS = ("access_review", "changes", "approvals", "audit", "incidents", "ai_usage")
MAX_PERIOD_DAYS = 3 * 366
_SECRET_WORDS = ("password", "totp", "secret", "hash", "token")
_CHANGE_ACTIONS = ("index.%", "tenant.settings.%", "alert_rules.%", "user.%", "api_key.%", "retention.%",
                   "hold.%", "oidc%", "identity%")
_APPROVAL_ACTIONS = ("document.review.%", "document.classification_lowered", "approval.issued.%",
                     "steward.review.escalated", "dataset.export.%", "write.%", "proposal.%")


@dataclass(frozen=True)
class Export:
    id: uuid.UUID
    path: Path
    sha256: str  # of the zip
    manifest_sha256: str
    manifest: dict[str, Any]


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1, default=str, ensure_ascii=False).encode()


def _table_exists(session: Session, name: str) -> bool:
    return bool(session.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": f"public.{name}"}).scalar())


def _rows(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in session.execute(text(sql), params).mappings().all()]


def _no_secrets(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not any(w in k.lower() for w in _SECRET_WORDS)}


def _like_any(column: str, patterns: tuple[str, ...], prefix: str) -> tuple[str, dict[str, str]]:
    params = {f"{prefix}{i}": p for i, p in enumerate(patterns)}
    return "(" + " OR ".join(f"{column} LIKE :{k}" for k in params) + ")", params


def _events(session: Session, patterns: tuple[str, ...], since: dt.datetime, until: dt.datetime,
            prefix: str) -> list[dict[str, Any]]:
    cond, params = _like_any("action", patterns, prefix)
    return _rows(session, "SELECT id, seq, ts, actor, actor_role, action, resource_type, resource_id, outcome, details "
                          f"FROM audit_events WHERE {cond} AND ts >= :since AND ts < :until ORDER BY seq",
                 {**params, "since": since, "until": until})


def verification(session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The audit chain's verification (`audit.verify`: links, keyed MACs, retention anchor, signed checkpoints) as
    a JSON object."""
    res: Any = audit.verify(session, tenant_id)
    if isinstance(res, tuple):
        ok, checked, broken = (list(res) + [None, None, None])[:3]
        return {"ok": bool(ok), "events_checked": checked, "first_broken_event": broken}
    if hasattr(res, "__dataclass_fields__"):
        import dataclasses

        out = dataclasses.asdict(res)
    elif isinstance(res, dict):
        out = dict(res)
    else:
        out = {k: v for k, v in vars(res).items() if not k.startswith("_")}
    out.setdefault("ok", bool(getattr(res, "ok", out.get("ok"))))
    clean: dict[str, Any] = json.loads(json.dumps(out, default=str))
    return clean


def collect(session: Session, tenant_id: uuid.UUID, since: dt.datetime, until: dt.datetime,
            model_config: dict[str, Any]) -> dict[str, tuple[str, Any, int]]:
    """{path in the zip: (section, JSON value, record count)} — everything read under the tenant's RLS."""
    p = {"since": since, "until": until}
    files: dict[str, tuple[str, Any, int]] = {}

    users = [_no_secrets(r["j"]) for r in _rows(session, "SELECT to_jsonb(u) AS j FROM users u ORDER BY u.username",
                                                 {})]
    files["access_review/users.json"] = ("access_review", users, len(users))
    if _table_exists(session, "api_keys"):
        keys = [_no_secrets(r["j"]) for r in _rows(session, "SELECT to_jsonb(k) AS j FROM api_keys k "
                                                            "ORDER BY k.created_at", {})]
        files["access_review/api_keys.json"] = ("access_review", keys, len(keys))
    by_role: dict[str, int] = {}
    by_permission: dict[str, int] = {}
    for u in users:
        if u.get("is_active", True):
            by_role[str(u.get("role"))] = by_role.get(str(u.get("role")), 0) + 1
            for perm in u.get("permissions") or []:
                by_permission[perm] = by_permission.get(perm, 0) + 1
    summary = {"users": len(users), "active_by_role": by_role, "active_by_permission": by_permission,
               "inactive": sorted(u["username"] for u in users if not u.get("is_active", True)),
               "admins": sorted(u["username"] for u in users if u.get("role") == "admin" and u.get("is_active", True))}
    files["access_review/summary.json"] = ("access_review", summary, 1)

    versions = _rows(session, "SELECT version, chunk_generation, status, kind, reason, config, stats, evaluation, "
                              "error, created_at, decided_at FROM index_versions "
                              "WHERE created_at < :until AND (created_at >= :since OR decided_at >= :since "
                              "OR status = 'active') ORDER BY version", p)
    files["changes/index_versions.json"] = ("changes", versions, len(versions))
    changes = _events(session, _CHANGE_ACTIONS, since, until, "c")
    files["changes/events.json"] = ("changes", changes, len(changes))
    embed = []
    prev_model = None
    for v in _rows(session, "SELECT version, status, created_at, decided_at, config->>'embedding_model' AS model "
                            "FROM index_versions ORDER BY version", {}):
        embed.append({**v, "changed": prev_model is not None and v["model"] != prev_model})
        prev_model = v["model"]
    llm = _rows(session, "SELECT model, tier, min(created_at) AS first_used, max(created_at) AS last_used, "
                         "count(*) AS calls FROM usage_records WHERE created_at >= :since AND created_at < :until "
                         "GROUP BY model, tier ORDER BY min(created_at)", p)
    models = {"configured": model_config, "embedding_by_index_version": embed, "llm_models_used": llm}
    files["changes/models.json"] = ("changes", models, len(embed) + len(llm))

    decisions = _events(session, _APPROVAL_ACTIONS, since, until, "a")
    tokens = _rows(session, "SELECT id, kind, subject, subject_role, document_id, content_hash, decision, issued_at, "
                            "expires_at, used_at, used_by_run FROM approval_tokens "
                            "WHERE issued_at >= :since AND issued_at < :until ORDER BY issued_at", p)
    files["approvals/steward_decisions.json"] = ("approvals", {"decisions": decisions, "approval_tokens": tokens},
                                                 len(decisions) + len(tokens))
    write_tables = [r["table_name"] for r in _rows(
        session, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                 "AND table_name LIKE '%proposal%' ORDER BY table_name", {})]
    writes: dict[str, Any] = {"tables": write_tables, "rows": {}}
    for name in write_tables:
        ident = '"' + name.replace('"', '""') + '"'
        writes["rows"][name] = [_no_secrets(r["j"]) for r in _rows(session, f"SELECT to_jsonb(w) AS j FROM {ident} w",
                                                                    {})]
    files["approvals/write_approvals.json"] = ("approvals", writes, sum(len(v) for v in writes["rows"].values()))

    files["audit/verification.json"] = ("audit", {"verified_at": dt.datetime.now(dt.UTC),
                                                  **verification(session, tenant_id)}, 1)

    alerts = _rows(session, "SELECT a.id, a.subject, a.status, a.severity, a.value, a.message, a.opened_at, "
                            "a.acknowledged_by, a.acknowledged_at, a.resolved_by, a.resolved_at, a.notify_count, "
                            "COALESCE((SELECT jsonb_agg(jsonb_build_object('channel', d.channel, 'status', d.status, "
                            "'attempts', d.attempts, 'at', d.created_at) ORDER BY d.created_at) "
                            "FROM alert_deliveries d WHERE d.alert_id = a.id), '[]'::jsonb) AS deliveries "
                            "FROM alerts a WHERE a.opened_at >= :since AND a.opened_at < :until "
                            "ORDER BY a.opened_at", p)
    escalations = _events(session, ("steward.review.escalated",), since, until, "e")
    files["incidents/alerts.json"] = ("incidents", {"alerts": alerts, "steward_escalations": escalations},
                                      len(alerts) + len(escalations))

    usage = _rows(session, "SELECT tier, model, agent, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens, "
                           "sum(completion_tokens) AS completion_tokens, sum(cost) AS cost FROM usage_records "
                           "WHERE created_at >= :since AND created_at < :until GROUP BY tier, model, agent "
                           "ORDER BY tier, model, agent", p)
    runs = _rows(session, "SELECT outcome, model_tier AS tier, count(*) AS answers FROM agent_runs "
                          "WHERE created_at >= :since AND created_at < :until GROUP BY outcome, model_tier "
                          "ORDER BY outcome, model_tier", p)
    refused = _rows(session, "SELECT action, outcome, count(*) AS n FROM audit_events WHERE outcome <> 'success' "
                             "AND ts >= :since AND ts < :until GROUP BY action, outcome ORDER BY action, outcome", p)
    files["ai_usage/usage.json"] = ("ai_usage", {"model_calls": usage, "answers": runs,
                                                 "refused_or_failed_requests": refused},
                                    len(usage) + len(runs) + len(refused))
    return files


def build(session: Session, *, tenant_id: uuid.UUID, tenant: str, actor: str, actor_role: str,
          since: dt.datetime, until: dt.datetime, out_dir: Path, model_config: dict[str, Any]) -> Export:
    """Collect the evidence, write the zip (owner-only) under `out_dir` and audit the export."""
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidInput("since and until need a time zone", code="invalid_period")
    if not since < until or (until - since).days > MAX_PERIOD_DAYS:
        raise InvalidInput(f"the period must run forwards and span at most {MAX_PERIOD_DAYS} days",
                           code="invalid_period")
    export_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    files = collect(session, tenant_id, since, until, model_config)
    blobs = {path: _dump(value) for path, (_s, value, _n) in files.items()}
    manifest = {
        "format": FORMAT, "export_id": str(export_id), "tenant": tenant, "tenant_id": str(tenant_id),
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "generated_at": now.isoformat(), "generated_by": actor, "generated_by_role": actor_role,
        "sections": {s: sorted(p for p, (sec, _v, _n) in files.items() if sec == s) for s in SECTIONS},
        "files": [{"path": path, "section": files[path][0], "sha256": hashlib.sha256(blob).hexdigest(),
                   "bytes": len(blob), "records": files[path][2]} for path, blob in sorted(blobs.items())],
    }
    manifest_blob = _dump(manifest)
    manifest_sha = hashlib.sha256(manifest_blob).hexdigest()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", manifest_blob)
        for name, blob in sorted(blobs.items()):
            z.writestr(name, blob)
    data = buf.getvalue()
    folder = out_dir / str(tenant_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{export_id}.zip"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action="compliance.soc2.exported",
                 resource_type="soc2_export", resource_id=str(export_id),
                 details={"manifest_sha256": manifest_sha, "zip_sha256": hashlib.sha256(data).hexdigest(),
                          "period": manifest["period"], "files": len(blobs)})
    return Export(export_id, path, hashlib.sha256(data).hexdigest(), manifest_sha, manifest)


def find(out_dir: Path, tenant_id: uuid.UUID, export_id: uuid.UUID) -> Path:
    """The stored zip of an export of this tenant (NotFound for any other)."""
    path = out_dir / str(tenant_id) / f"{export_id}.zip"
    if not path.is_file():
        raise NotFound("SOC 2 export not found", code="export_not_found")
    return path
