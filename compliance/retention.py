"""Retention schedule: how long each type of record is kept, per tenant within legal minimums, and the nightly
pass (Dagster job `apply_retention`) that purges or anonymises what is past its period — except what a destruction
hold covers — and reports both.

The periods below are defaults; a compliance officer sets a tenant's own period per record type
(`set_policy`), never below the type's minimum. Actions:

- purge: the rows are deleted (conversations take their messages and the feedback on them along; the audit trail
  is purged from its oldest end behind a signed anchor so the rest still verifies, see compliance/audit/);
- anonymise: the rows stay for aggregates (usage costs, feedback votes), the person is removed from them.

Holds (compliance/holds.py): a tenant hold keeps everything of the tenant; a user hold keeps that person's records
(and the documents they uploaded); a conversation or document hold keeps that one. Any active hold of a tenant
keeps its audit trail whole (a purge removes a prefix of the chain, which cannot skip a held record).
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance import audit, holds
from core.errors import InvalidInput
from core.settings import get_settings

Action = Literal["purge", "anonymise"]
LISTED = 100  # ids listed per record type in a report


@dataclass(frozen=True)
class RecordType:
    name: str
    default_days: int
    minimum_days: int  # the legal floor a tenant cannot go below
    action: Action
    description: str


SCHEDULE: dict[str, RecordType] = {r.name: r for r in (
    RecordType("audit_events", 2555, 365, "purge", "audit trail (an official record: 7 years by default)"),
    RecordType("conversations", 365, 30, "purge", "conversations with their messages"),
    RecordType("memories", 365, 7, "purge", "what the assistant remembers about a user"),
    RecordType("feedback", 730, 30, "anonymise", "ratings and comments (the vote stays, the person goes)"),
    RecordType("traces", 180, 30, "purge", "agent runs with their traces"),
    RecordType("usage", 1095, 365, "anonymise", "token usage and cost (kept for accounting, without the user)"),
    RecordType("mes_observations", 365, 90, "purge", "stored MES observations"),
    RecordType("sap_extracts", 365, 90, "purge", "SAP extract copies (stock snapshots, material master, open "
                                                 "purchase order items, cost centres) and the extract log"),
    RecordType("alerts", 730, 365, "purge", "resolved alerts with their deliveries"),
    RecordType("document_versions", 90, 30, "purge", "stage products of superseded document versions"),
    RecordType("eval_runs", 730, 90, "purge", "golden-evaluation runs"),
)}


def policies(session: Session, tenant_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The tenant's effective schedule: {record type: {days, default_days, minimum_days, action, custom}}."""
    custom = {r.record_type: (int(r.days), r.updated_by, r.updated_at) for r in session.execute(
        text("SELECT record_type, days, updated_by, updated_at FROM retention_policies WHERE tenant_id = :t"),
        {"t": tenant_id})}
    out: dict[str, dict[str, Any]] = {}
    for name, rt in SCHEDULE.items():
        days, by, at = custom.get(name, (rt.default_days, None, None))
        out[name] = {"days": days, "default_days": rt.default_days, "minimum_days": rt.minimum_days,
                     "action": rt.action, "description": rt.description, "custom": name in custom,
                     "updated_by": by, "updated_at": at.isoformat() if at else None}
    return out


def set_policy(session: Session, tenant_id: uuid.UUID, record_type: str, days: int | None, *, actor: str,
               actor_role: str | None = None) -> dict[str, Any]:
    """Set (or with days None reset to the default) the tenant's period for one record type; audited."""
    rt = SCHEDULE.get(record_type)
    if rt is None:
        raise InvalidInput(f"unknown record type {record_type!r}; one of {', '.join(SCHEDULE)}",
                           code="unknown_record_type")
    if days is not None and days < rt.minimum_days:
        raise InvalidInput(f"{record_type} must be kept at least {rt.minimum_days} days (legal minimum)",
                           code="below_legal_minimum", details={"minimum_days": rt.minimum_days})
    before = policies(session, tenant_id)[record_type]["days"]
    if days is None:
        session.execute(text("DELETE FROM retention_policies WHERE tenant_id = :t AND record_type = :r"),
                        {"t": tenant_id, "r": record_type})
    else:
        session.execute(text("INSERT INTO retention_policies (tenant_id, record_type, days, updated_by) "
                             "VALUES (:t, :r, :d, :by) ON CONFLICT (tenant_id, record_type) DO UPDATE "
                             "SET days = EXCLUDED.days, updated_by = EXCLUDED.updated_by, updated_at = now()"),
                        {"t": tenant_id, "r": record_type, "d": days, "by": actor})
    after = days if days is not None else rt.default_days
    audit.record(session, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action="retention.policy.changed",
                 resource_type="retention_policy", resource_id=record_type,
                 details={"from_days": before, "to_days": after, "reset": days is None})
    return policies(session, tenant_id)[record_type]


@dataclass
class TypeReport:
    record_type: str
    action: str
    days: int
    cutoff: str
    affected: int = 0
    held: int = 0
    affected_ids: list[str] = field(default_factory=list)
    held_ids: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class TenantReport:
    tenant_id: str
    ran_at: str
    holds: list[dict[str, str]]
    types: list[TypeReport]

    @property
    def affected(self) -> int:
        return sum(t.affected for t in self.types)

    @property
    def held(self) -> int:
        return sum(t.held for t in self.types)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "affected": self.affected, "held": self.held}


# (table, id column, time column, user column, conversation column, extra condition)
_TABLES: dict[str, tuple[str, str, str, str | None, str | None, str]] = {
    "conversations": ("conversations", "id", "updated_at", "user_subject", "id", "TRUE"),
    "memories": ("memories", "id", "updated_at", "user_subject", None, "TRUE"),
    "feedback": ("feedback f", "f.id", "f.created_at", "f.user_subject",
                 "(SELECT m.conversation_id FROM messages m WHERE m.id = f.message_id)",
                 "NOT starts_with(f.user_subject, 'anonymised:')"),
    "traces": ("agent_runs", "id", "created_at", "user_subject", "conversation_id", "TRUE"),
    "usage": ("usage_records", "id", "created_at", "user_subject", None, "user_subject <> 'anonymised'"),
    "mes_observations": ("mes_observations", "id", "observed_at", None, None, "TRUE"),
    "alerts": ("alerts", "id", "coalesce(resolved_at, updated_at)", None, None, "status = 'resolved'"),
    "eval_runs": ("eval_runs", "id", "created_at", None, None, "TRUE"),
}
_APPLY: dict[str, str] = {
    "conversations": "DELETE FROM conversations WHERE id = ANY(:ids)",
    "memories": "DELETE FROM memories WHERE id = ANY(:ids)",
    "feedback": "UPDATE feedback SET user_subject = 'anonymised:' || left(md5(id::text), 16), comment = NULL, "
                "updated_at = now() WHERE id = ANY(:ids)",
    "traces": "DELETE FROM agent_runs WHERE id = ANY(:ids)",
    "usage": "UPDATE usage_records SET user_subject = 'anonymised' WHERE id = ANY(:ids)",
    "mes_observations": "DELETE FROM mes_observations WHERE id = ANY(:ids)",
    "alerts": "DELETE FROM alerts WHERE id = ANY(:ids)",
    "eval_runs": "DELETE FROM eval_runs WHERE id = ANY(:ids)",
}


def _rows(session: Session, tenant_id: uuid.UUID, name: str, cutoff: dt.datetime,
          h: holds.ActiveHolds) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    table, id_col, ts_col, user_col, conv_col, extra = _TABLES[name]
    alias = table.split()[-1] + "." if " " in table else ""
    cols = [id_col, user_col or "NULL", conv_col or "NULL"]
    rows = session.execute(text(f"SELECT {', '.join(cols)} FROM {table} WHERE {alias}tenant_id = :t "
                                f"AND {ts_col} < :cutoff AND {extra}"), {"t": tenant_id, "cutoff": cutoff}).all()
    keep, held = [], []
    for rid, user, conv in rows:
        if h.tenant or (user is not None and user in h.users) or (conv is not None and str(conv) in h.conversations):
            held.append(rid)
        else:
            keep.append(rid)
    return keep, held


def _document_versions(session: Session, tenant_id: uuid.UUID, cutoff: dt.datetime, h: holds.ActiveHolds,
                       rep: TypeReport) -> None:
    root = get_settings().pipeline_dir
    for doc_id, content_hash, created_by in session.execute(
            text("SELECT id, content_hash, created_by FROM documents WHERE tenant_id = :t"), {"t": tenant_id}):
        folder = root / str(doc_id)
        if not folder.is_dir():
            continue
        for version in folder.iterdir():
            if version.name == content_hash[:16] or not version.is_dir():
                continue
            if dt.datetime.fromtimestamp(version.stat().st_mtime, dt.UTC) >= cutoff:
                continue
            label = f"{doc_id}/{version.name}"
            if h.tenant or str(doc_id) in h.documents or (created_by is not None and created_by in h.users):
                rep.held += 1
                rep.held_ids.append(label)
                continue
            shutil.rmtree(version, ignore_errors=True)
            rep.affected += 1
            rep.affected_ids.append(label)


# The SAP extract tables (migration 0018, monitoring/sap_extracts.py), all timed by `extracted_at`. Stock is kept
# as snapshots (history); the other three hold the current state, replaced by each extract, so their rows only
# pass the period when the tenant's extracts stopped. SAP data names no person: only a tenant hold keeps it.
SAP_TABLES = ("sap_stock", "sap_materials", "sap_open_po_items", "sap_cost_centers", "sap_extracts")


def _sap_extracts(session: Session, tenant_id: uuid.UUID, cutoff: dt.datetime, h: holds.ActiveHolds,
                  rep: TypeReport) -> None:
    counts: dict[str, int] = {}
    for table in SAP_TABLES:
        ids = [str(i) for i in session.execute(
            text(f"SELECT id FROM {table} WHERE tenant_id = :t AND extracted_at < :cutoff"),
            {"t": tenant_id, "cutoff": cutoff}).scalars()]
        if not ids:
            continue
        counts[table] = len(ids)
        labels = [f"{table}/{i}" for i in ids]
        if h.tenant:
            rep.held += len(ids)
            rep.held_ids.extend(labels)
            continue
        session.execute(text(f"DELETE FROM {table} WHERE tenant_id = :t AND id = ANY(CAST(:ids AS uuid[]))"),
                        {"t": tenant_id, "ids": ids})
        rep.affected += len(ids)
        rep.affected_ids.extend(labels)
    if counts:
        rep.note = ", ".join(f"{t}: {n}" for t, n in counts.items())


def apply(session: Session, tenant_id: uuid.UUID, *, now: dt.datetime | None = None) -> TenantReport:
    """One tenant's retention pass, in the caller's transaction (the pipeline's identity: it purges the audit
    trail through `audit_purge`). Returns the report and records it (`retention.applied`)."""
    now = now or dt.datetime.now(dt.UTC)
    h = holds.active(session, tenant_id)
    held_by = [{"id": str(x.id), "scope": x.scope, "target": x.target, "reason": x.reason} for x in h.all()]
    report = TenantReport(str(tenant_id), now.isoformat(), held_by, [])
    for name, pol in policies(session, tenant_id).items():
        cutoff = now - dt.timedelta(days=int(pol["days"]))
        rep = TypeReport(name, pol["action"], int(pol["days"]), cutoff.isoformat())
        if name == "audit_events":
            past = int(session.execute(text("SELECT count(*) FROM audit_events WHERE tenant_id = :t AND ts < :c"),
                                       {"t": tenant_id, "c": cutoff}).scalar_one())
            if h.any and past:
                rep.held, rep.note = past, "an active hold keeps the whole audit trail"
            elif past:
                res = audit.purge_before(session, tenant_id, cutoff)
                rep.affected, rep.note = res.purged, res.refused or (
                    f"anchored at seq {res.anchor_seq}" if res.anchor_seq is not None else None)
        elif name == "document_versions":
            _document_versions(session, tenant_id, cutoff, h, rep)
        elif name == "sap_extracts":
            _sap_extracts(session, tenant_id, cutoff, h, rep)
        else:
            ids, held = _rows(session, tenant_id, name, cutoff, h)
            if ids:
                session.execute(text(_APPLY[name]), {"ids": ids})
            rep.affected, rep.held = len(ids), len(held)
            rep.affected_ids, rep.held_ids = [str(i) for i in ids], [str(i) for i in held]
        rep.affected_ids, rep.held_ids = rep.affected_ids[:LISTED], rep.held_ids[:LISTED]
        report.types.append(rep)
    audit.record(session, tenant_id=tenant_id, actor="system", action="retention.applied",
                 resource_type="retention", resource_id=now.date().isoformat(),
                 details={"affected": {t.record_type: t.affected for t in report.types if t.affected},
                          "held": {t.record_type: t.held for t in report.types if t.held},
                          "holds": [x["id"] for x in report.holds]})
    return report
