"""Compliance dashboard data for one tenant (`GET /v1/compliance/dashboard`), read under the tenant's RLS.

- `documents_by_class`: documents per class (I–IV) and status;
- `pending_approvals`: Class III/IV documents waiting for a data steward, how many, the oldest's age and the
  oldest few (title, class, age) — the same set as the Dagster `review_queue` asset;
- `pii`: documents whose text had personal data (the classifier's PII detector), findings by type;
- `ai_usage_by_tier`: model calls, tokens and cost per tier in the period;
- `export_control`: the export-control guard's decisions on answers in the period;
- `refused_requests`: audit records in the period whose outcome is not success (denied, failure …) by action;
- `holds`: active destruction holds by scope; `gdpr_requests`: open requests (received/processing) by kind
  and how many are past their deadline. Both read the records-management tables (migration 0017); on a
  database without them the fields report 0 with `"available": false`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.classification import CLASS_NAMES


def _exists(session: Session, table: str) -> bool:
    return bool(session.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": f"public.{table}"}).scalar())


def build(session: Session, *, days: int = 30, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    p = {"since": since}
    by_class: dict[str, dict[str, int]] = {name: {"total": 0} for name in CLASS_NAMES.values()}
    for cls, status, n in session.execute(text(
            "SELECT classification, status, count(*) FROM documents GROUP BY classification, status")).all():
        entry = by_class[CLASS_NAMES[int(cls)]]
        entry[status] = int(n)
        entry["total"] += int(n)

    pending = session.execute(text(
        "SELECT id::text AS id, title, classification, created_by, queued_at FROM documents "
        "WHERE status = 'awaiting_approval' ORDER BY queued_at, id")).mappings().all()
    ages = [(now - r["queued_at"]).total_seconds() / 3600 for r in pending]
    pending_out = {
        "count": len(pending),
        "oldest_hours": round(max(ages), 1) if ages else 0.0,
        "over_24h": sum(1 for a in ages if a >= 24),
        "oldest": [{"document_id": r["id"], "title": r["title"], "class": CLASS_NAMES[int(r["classification"])],
                    "uploader": r["created_by"], "age_hours": round(a, 1)} for r, a in list(zip(pending, ages,
                                                                                                 strict=True))[:10]],
    }

    pii_docs, findings = 0, 0
    by_type: dict[str, int] = {}
    for reasons in session.execute(text(
            "SELECT classification_reasons FROM documents WHERE classification_reasons @> "
            "CAST('[{\"detector\": \"pii_density\"}]' AS jsonb)")).scalars():
        pii_docs += 1
        for r in reasons:
            if r.get("detector") == "pii_density":
                findings += int(r.get("findings") or 0)
                for t in r.get("types") or []:
                    by_type[t] = by_type.get(t, 0) + 1
    raised_for_pii = session.execute(text(
        "SELECT count(*) FROM documents WHERE classification_reasons @> "
        "CAST('[{\"detector\": \"pii_density\", \"class\": \"III\"}]' AS jsonb)")).scalar()

    usage = {r["tier"]: {"calls": int(r["calls"]), "prompt_tokens": int(r["pt"] or 0),
                         "completion_tokens": int(r["ct"] or 0), "cost": float(r["cost"] or 0)}
             for r in session.execute(text(
                 "SELECT tier, count(*) AS calls, sum(prompt_tokens) AS pt, sum(completion_tokens) AS ct, "
                 "sum(cost) AS cost FROM usage_records WHERE created_at >= :since GROUP BY tier"), p).mappings()}

    export = {str(d): int(n) for d, n in session.execute(text(
        "SELECT step->>'decision', count(*) FROM agent_runs, jsonb_array_elements(trace) AS step "
        "WHERE created_at >= :since AND step->>'step' = 'COMPLIANCE.export_control' GROUP BY 1"), p).all()}

    refused_rows = session.execute(text(
        "SELECT action, outcome, count(*) FROM audit_events WHERE outcome <> 'success' AND ts >= :since "
        "GROUP BY action, outcome ORDER BY count(*) DESC"), p).all()
    refused = {"total": sum(int(n) for _a, _o, n in refused_rows),
               "by_action": [{"action": a, "outcome": o, "count": int(n)} for a, o, n in refused_rows]}

    holds: dict[str, Any] = {"available": _exists(session, "destruction_holds"), "active": 0, "by_scope": {}}
    if holds["available"]:
        for scope, n in session.execute(text(
                "SELECT scope, count(*) FROM destruction_holds WHERE released_at IS NULL GROUP BY scope")).all():
            holds["by_scope"][scope] = int(n)
            holds["active"] += int(n)
    gdpr: dict[str, Any] = {"available": _exists(session, "gdpr_requests"), "open": 0, "overdue": 0, "by_kind": {}}
    if gdpr["available"]:
        for kind, n, overdue in session.execute(text(
                "SELECT kind, count(*), count(*) FILTER (WHERE due_at < now()) FROM gdpr_requests "
                "WHERE status IN ('received', 'processing') GROUP BY kind")).all():
            gdpr["by_kind"][kind] = int(n)
            gdpr["open"] += int(n)
            gdpr["overdue"] += int(overdue)

    return {"generated_at": now, "period_days": days, "documents_by_class": by_class,
            "pending_approvals": pending_out,
            "pii": {"documents_with_pii": pii_docs, "findings": findings, "documents_by_type": by_type,
                    "raised_to_class_iii": int(raised_for_pii or 0)},
            "ai_usage_by_tier": usage, "export_control": export, "refused_requests": refused,
            "holds": holds, "gdpr_requests": gdpr}
