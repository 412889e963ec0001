"""Reading the trail (filters, keyset paging), GDPR erasure in it (keyed pseudonyms that keep each record and its
MAC) and its retention (purge from the oldest end behind a signed anchor)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.audit.chain import MARKER, _anchor_body, _canonical, _chain_where, _params, _sign, chain_name, field_ref
from compliance.audit.keys import load_keys
from compliance.audit.verification import verify


@dataclass(frozen=True)
class EventFilter:
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in '.' or '*' ("document.*")
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def list_events(session: Session, tenant_id: uuid.UUID, flt: EventFilter, *, limit: int = 100,
                before_seq: int | None = None) -> list[dict[str, Any]]:
    """Newest first, `limit` rows older than `before_seq` (keyset paging)."""
    where = ["tenant_id = CAST(:t AS uuid)"]
    params: dict[str, Any] = {"t": str(tenant_id), "limit": limit}
    for col in ("actor", "resource_type", "resource_id", "outcome"):
        if getattr(flt, col) is not None:
            where.append(f"{col} = :{col}")
            params[col] = getattr(flt, col)
    if flt.action:
        if flt.action.endswith(("*", ".")):
            where.append("starts_with(action, :action)")
            params["action"] = flt.action.rstrip("*")
        else:
            where.append("action = :action")
            params["action"] = flt.action
    if flt.since is not None:
        where.append("ts >= :since")
        params["since"] = flt.since
    if flt.until is not None:
        where.append("ts < :until")
        params["until"] = flt.until
    if before_seq is not None:
        where.append("seq < :before")
        params["before"] = before_seq
    rows = session.execute(text(f"SELECT id, seq, ts, actor, actor_role, action, resource_type, resource_id, outcome, "
                                f"details, key_id FROM audit_events WHERE {' AND '.join(where)} "
                                "ORDER BY seq DESC LIMIT :limit"), params).mappings().all()
    return [dict(r) for r in rows]


def pseudonym(tenant_id: uuid.UUID, subject: str) -> str:
    """A stable pseudonym for a person of a tenant (keyed: not reversible without the audit key)."""
    keys = load_keys()
    ref = hmac.new(keys.ref_key(keys.active), f"subject|{tenant_id}|{subject}".encode(), hashlib.sha256).hexdigest()
    return MARKER + ref[:24]


def pseudonymise(session: Session, tenant_id: uuid.UUID, identifiers: list[str]) -> int:
    """GDPR erasure in the audit trail (pipeline identity only): every record of the tenant whose actor is one of
    `identifiers`, or whose resource id or details mention one, keeps its place and its MAC, with those fields
    replaced by keyed markers. Returns the number of records changed."""
    idents = [i for i in identifiers if i]
    if not idents:
        return 0
    keys = load_keys()
    # Identifiers of fewer than 4 characters only match a whole field: as substrings they would erase other people's
    # records too.
    long = [i for i in idents if len(i) >= 4]
    rows = session.execute(text(
        "SELECT id, key_id, actor, resource_id, details FROM audit_events WHERE tenant_id = CAST(:t AS uuid) AND ("
        "actor = ANY(:ids) OR resource_id = ANY(:ids) OR EXISTS (SELECT 1 FROM unnest(CAST(:long AS text[])) i(v) "
        "WHERE strpos(coalesce(resource_id, ''), i.v) > 0 OR strpos(details::text, i.v) > 0 "
        "OR strpos(actor, i.v) > 0)) ORDER BY seq"), {"t": str(tenant_id), "ids": idents, "long": long}).all()

    def mentions(value: Any) -> bool:
        if isinstance(value, str) and value in idents:
            return True
        blob = value if isinstance(value, str) else _canonical(value)
        return any(i in blob for i in long)

    n = 0
    for r in rows:
        kid = r.key_id or keys.active
        actor = MARKER + field_ref(keys, kid, "actor", r.actor) if mentions(r.actor) else r.actor
        rid = (MARKER + field_ref(keys, kid, "resource_id", r.resource_id)
               if r.resource_id is not None and mentions(r.resource_id) else r.resource_id)
        details = {"erased": field_ref(keys, kid, "details", r.details)} if mentions(r.details) else r.details
        if (actor, rid, details) == (r.actor, r.resource_id, r.details):
            continue
        session.execute(text("SELECT audit_redact(:id, :actor, :rid, CAST(:details AS jsonb))"),
                        {"id": r.id, "actor": actor, "rid": rid, "details": json.dumps(details)})
        n += 1
    return n


@dataclass(frozen=True)
class PurgeResult:
    chain: str
    purged: int
    anchor_seq: int | None
    refused: str | None = None


def purge_before(session: Session, tenant_id: uuid.UUID | None, cutoff: dt.datetime) -> PurgeResult:
    """Retention for the audit trail (pipeline identity only): delete the chain's oldest rows written before
    `cutoff`, never its head, after writing a signed anchor at the last purged row so the rest still verifies.
    Refused (nothing deleted) when the chain does not verify: a broken chain is evidence."""
    chain = chain_name(tenant_id)
    res = verify(session, tenant_id)
    if not res.ok:
        return PurgeResult(chain, 0, None, f"the chain does not verify ({res.breaks[0].reason})")
    upto = session.execute(text(
        f"SELECT max(seq) FROM audit_events WHERE {_chain_where(tenant_id)} AND ts < :cutoff "
        f"AND seq < (SELECT max(seq) FROM audit_events WHERE {_chain_where(tenant_id)})"),
        {**_params(tenant_id), "cutoff": cutoff}).scalar()
    if upto is None:
        return PurgeResult(chain, 0, None)
    row = session.execute(text("SELECT seq, hash, mac FROM audit_events WHERE seq = :s"), {"s": upto}).one()
    count = int(session.execute(text(f"SELECT count(*) FROM audit_events WHERE {_chain_where(tenant_id)} "
                                     "AND seq <= :s"), {**_params(tenant_id), "s": upto}).scalar_one())
    keys = load_keys()
    body = _anchor_body(tenant_id, int(row.seq), row.hash, row.mac, keys.active, count)
    session.execute(text("INSERT INTO audit_anchors (tenant_id, seq, hash, mac, key_id, purged, sig) "
                         "VALUES (CAST(:t AS uuid), :seq, :hash, :mac, :kid, :purged, :sig)"),
                    {**_params(tenant_id), "seq": int(row.seq), "hash": row.hash, "mac": row.mac, "kid": keys.active,
                     "purged": count, "sig": _sign(keys, keys.active, body)})
    deleted = int(session.execute(text("SELECT audit_purge(CAST(:t AS uuid), :s)"),
                                  {**_params(tenant_id), "s": int(row.seq)}).scalar_one())
    return PurgeResult(chain, deleted, int(row.seq))
