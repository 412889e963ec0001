"""The data steward's view in the Dagster UI.

- `review_queue` (group `steward`, refreshed by the `steward_review_queue` schedule every 15 minutes and
  after each ingestion run that leaves a document waiting): its metadata is a readable table of every
  Class III/IV document awaiting a steward — title, tenant, class with the detectors' reasons, uploader,
  age, a sanitised preview and the partition to launch `steward_review` for — and it escalates reviews
  pending longer than the tenant's limit (webhook / e-mail, audited once per document version).
- `steward_review_pending` (an asset check on `search_index`, per document partition, severity WARN): it
  fails for a partition that waits for a steward, so the partition is flagged on the asset's page, with
  the document's title, class and reasons in the check's metadata. The steward_review_watch sensor records
  it when a document version starts waiting (and passed when it no longer does); the steward's review run
  evaluates it itself, so it turns green once the document is decided.

The preview shows sanitised text (PII replaced by placeholders, as stored for Class III/IV) and at most
`EAP_STEWARD_PREVIEW_CHARS` characters (0: none). Dagster's webserver has no login: the runbook puts it
behind the customer's authenticating proxy, and the decision itself needs an approval token from the API.
"""


import datetime as dt
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import dagster as dg
from sqlalchemy import text

from assets.ingestion import INDEX, documents_partitions
from assets.resources import PlatformDatabase

# Partitioned asset checks are a preview feature of Dagster 1.13; they are what puts a flag on each waiting partition.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

GROUP = "steward"
ESCALATED = "steward.review.escalated"


@dataclass
class Pending:
    document_id: str
    tenant_id: uuid.UUID
    tenant: str
    title: str
    filename: str
    classification: int
    declared: int
    reasons: list[dict[str, Any]]
    uploader: str | None
    queued_at: dt.datetime
    content_hash: str

    def age_hours(self, now: dt.datetime) -> float:
        return round((now - self.queued_at).total_seconds() / 3600, 1)


_PENDING_SQL = """
SELECT d.id::text AS document_id, d.tenant_id, t.name AS tenant, d.title, d.filename, d.classification,
       d.declared_classification AS declared, d.classification_reasons AS reasons, d.created_by AS uploader,
       d.queued_at, d.content_hash
FROM documents d JOIN tenants t ON t.id = d.tenant_id
WHERE d.status = 'awaiting_approval' {where}
ORDER BY d.queued_at, d.id
"""


def pending_documents(db: PlatformDatabase, document_ids: list[str] | None = None) -> list[Pending]:
    """Documents waiting for a steward, across tenants (the pipeline's identity), oldest first."""
    where, params = "", {}
    if document_ids is not None:
        where, params = "AND d.id = ANY(CAST(:ids AS uuid[]))", {"ids": document_ids}
    with db.system() as s:
        rows = s.execute(text(_PENDING_SQL.format(where=where)), params).mappings().all()
    return [Pending(**dict(r)) for r in rows]


def reasons_text(p: Pending) -> str:
    """The detectors' reasons in a line: what raised the class and the evidence they quote."""
    from compliance.classification import CLASS_NAMES

    parts = []
    for r in p.reasons:
        det = r.get("detector")
        if det == "declared":
            parts.append(f"declared {r.get('class')}")
        elif det == "pii_density":
            raised = f" → {r['class']}" if r.get("class") else ""
            parts.append(f"PII: {r.get('findings')} findings ({', '.join(r.get('types', []))}; "
                         f"{r.get('per_1000_words')}/1000 words){raised}")
        elif det == "steward":
            parts.append(f"lowered to {r.get('class')} by {r.get('by')}")
        else:
            ev = str(r.get("evidence") or r.get("label") or "")[:60]
            parts.append(f"{det} '{ev}' → {r.get('class')}")
    return f"Class {CLASS_NAMES[p.classification]}: " + "; ".join(parts)


def preview(p: Pending, chars: int) -> str:
    """The start of the document's sanitised text (PII placeholders), re-checked for PII, one line."""
    from compliance.pii import sanitise
    from ingestion import store

    if chars <= 0:
        return ""
    job = store.load_jobs([p.document_id]).get(p.document_id)
    if job is None or job.content_hash != p.content_hash:
        return ""
    st = store.Stages(job)
    if not st.has("sanitised.json"):
        return "(no processed version yet)"
    san = st.read_json("sanitised.json")
    body = " ".join(" ".join(e.get("text", "") for e in san.get("elements", [])).split())
    out = sanitise(body[: chars * 2]).text[:chars]
    return out + ("…" if len(body) > chars else "")


def _age(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def queue_table(items: list[Pending], now: dt.datetime, preview_chars: int) -> str:
    """The review queue as a markdown table (the asset's metadata, shown in the UI)."""
    if not items:
        return "No document is waiting for a data steward."
    head = ("| title | tenant | class and reasons | uploader | waiting | preview | partition (steward_review) |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = [f"| {_cell(p.title)} | {_cell(p.tenant)} | {_cell(reasons_text(p))} | {_cell(p.uploader or '—')} | "
            f"{_age((now - p.queued_at).total_seconds() / 3600)} | {_cell(preview(p, preview_chars))} | "
            f"`{p.document_id}` |" for p in items]
    return head + "\n".join(rows)


def _steward_settings(db: PlatformDatabase, tenant_id: uuid.UUID) -> dict[str, Any]:
    with db.system() as s:
        settings = s.execute(text("SELECT settings FROM tenants WHERE id = :t"), {"t": tenant_id}).scalar()
    return dict((settings or {}).get("steward") or {})


def escalate(db: PlatformDatabase, items: list[Pending], now: dt.datetime,
             log: dg.DagsterLogManager | None = None) -> list[dict[str, Any]]:
    """Notify the tenant's steward channels of each document version pending longer than its limit, once
    per version (an audit record `steward.review.escalated` per version says it was done and to whom)."""
    from compliance import audit
    from compliance.classification import CLASS_NAMES
    from core.settings import get_settings
    from monitoring import dispatch

    default_hours = get_settings().steward_escalation_hours
    done: list[dict[str, Any]] = []
    per_tenant: dict[uuid.UUID, dict[str, Any]] = {}
    for p in items:
        cfg = per_tenant.setdefault(p.tenant_id, _steward_settings(db, p.tenant_id))
        limit = float(cfg.get("escalate_after_hours") or default_hours)
        age = p.age_hours(now)
        if (now - p.queued_at).total_seconds() < limit * 3600:
            continue
        with db.system() as s:
            already = s.execute(text(
                "SELECT 1 FROM audit_events WHERE tenant_id = :t AND action = :a AND resource_id = :d "
                "AND details->>'sha256' = :sha LIMIT 1"),
                {"t": p.tenant_id, "a": ESCALATED, "d": p.document_id, "sha": p.content_hash}).first()
        if already:
            continue
        title = (f"Data steward review overdue: '{p.title}' (Class {CLASS_NAMES[p.classification]}, "
                 f"tenant {p.tenant}) has waited {age:.0f} h (limit {limit:g} h)")
        body = (f"{title}\n\nDocument {p.document_id}, uploaded by {p.uploader or 'unknown'}.\n"
                f"{reasons_text(p)}\n\nA data steward asks the platform for an approval token "
                f"(POST /v1/documents/{p.document_id}/review-token) and launches Dagster job steward_review "
                f"for partition {p.document_id}.")
        payload = {"title": title, "text": body, "kind": "steward_review_overdue", "document_id": p.document_id,
                   "tenant": p.tenant, "class": CLASS_NAMES[p.classification], "age_hours": age,
                   "limit_hours": limit}
        results = dispatch.send(cfg, title, body, payload)
        deliveries = [{"channel": c, "target": dispatch.public_target(c, tgt), "delivered": ok, "attempts": n,
                       "error": err} for c, tgt, ok, n, err in results]
        with db.system() as s:
            audit.record(s, tenant_id=p.tenant_id, actor="pipeline", actor_role="system", action=ESCALATED,
                         resource_type="document", resource_id=p.document_id,
                         outcome="success" if deliveries and all(d["delivered"] for d in deliveries) else "failure",
                         details={"sha256": p.content_hash, "age_hours": age, "limit_hours": limit,
                                  "deliveries": deliveries})
        if log is not None:
            log.warning(f"{title}: " + (", ".join(f"{d['channel']}:{'delivered' if d['delivered'] else 'failed'}"
                                                  for d in deliveries) or "no steward channels configured"))
        done.append({"document_id": p.document_id, "age_hours": age, "deliveries": deliveries})
    return done


@dg.asset(group_name=GROUP, description="Class III/IV documents waiting for a data steward: a readable table "
          "(title, tenant, class and the detectors' reasons, uploader, age, sanitised preview, partition); "
          "overdue reviews escalate by webhook / e-mail.")
def review_queue(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
    from core.settings import get_settings

    now = dt.datetime.now(dt.UTC)
    items = pending_documents(db)
    chars = get_settings().steward_preview_chars
    escalated = escalate(db, items, now, context.log)
    return dg.MaterializeResult(metadata={
        "queue": dg.MetadataValue.md(queue_table(items, now, chars)),
        "pending": len(items),
        "oldest_hours": max((p.age_hours(now) for p in items), default=0.0),
        "partitions": dg.MetadataValue.json({p.document_id: p.title for p in items}),
        "escalated": len(escalated),
        "how_to_review": dg.MetadataValue.md(
            "Ask the platform API for an approval token (`POST /v1/documents/{id}/review-token` with "
            "`decision` approve|reject, `reason`, optionally `classification` to lower a detector's raise), then "
            "launch job **steward_review** for the document's partition with the returned run config."),
    })


CHECK = dg.AssetCheckKey(dg.AssetKey("search_index"), "steward_review_pending")


def check_metadata(p: Pending, now: dt.datetime) -> dict[str, Any]:
    from compliance.classification import CLASS_NAMES

    return {"document": p.document_id, "waiting_for_steward": True, "title": p.title, "tenant": p.tenant,
            "class": CLASS_NAMES[p.classification], "reasons": reasons_text(p), "uploader": p.uploader or "",
            "waiting_hours": p.age_hours(now)}


def flag(instance: dg.DagsterInstance, waiting: list[Pending], decided: list[str]) -> None:
    """Record the `steward_review_pending` result of partitions outside a run (Dagster runs a partitioned check
    only together with its asset): WARN for each document version that started waiting, passed for each that
    no longer waits. The steward_review run evaluates the check itself."""
    now = dt.datetime.now(dt.UTC)
    for p in waiting:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=CHECK.asset_key, check_name=CHECK.name, passed=False, severity=dg.AssetCheckSeverity.WARN,
            description=f"'{p.title}' waits for a data steward", metadata=check_metadata(p, now),
            partition=p.document_id))
    for key in decided:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=CHECK.asset_key, check_name=CHECK.name, passed=True, severity=dg.AssetCheckSeverity.WARN,
            metadata={"document": key, "waiting_for_steward": False}, partition=key))


@dg.asset_check(asset=INDEX, partitions_def=documents_partitions, name=CHECK.name,
                description="WARN while the document (partition) waits for a data steward; its title, class and "
                            "the detectors' reasons are in the metadata.")
def steward_review_pending(context: dg.AssetCheckExecutionContext, db: PlatformDatabase) -> dg.AssetCheckResult:
    key = context.partition_key
    items = pending_documents(db, [key])
    if not items:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"document": key, "waiting_for_steward": False})
    p = items[0]
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                               description=f"'{p.title}' waits for a data steward",
                               metadata=check_metadata(p, dt.datetime.now(dt.UTC)))


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[review_queue], asset_checks=[steward_review_pending])
