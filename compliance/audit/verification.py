"""Verification of a chain: the unkeyed links, every row's keyed MAC, the retention anchor, and every signed
checkpoint newer than the anchor still present (truncation). Used by GET /v1/audit/verify, the Dagster check
`audit_chain_verified` and the retention purge (a chain that does not verify is evidence and is not purged)."""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.audit.chain import (
    _anchor_body,
    _chain_where,
    _digest,
    _mac,
    _params,
    _payload,
    _redacted,
    _sign,
    chain_name,
)
from compliance.audit.checkpoints import read_checkpoints
from compliance.audit.keys import AuditKeys, load_keys


@dataclass(frozen=True)
class ChainBreak:
    reason: str  # link_broken | mac_mismatch | hash_mismatch | unsealed | unknown_key | anchor_invalid |
    #              checkpoint_missing | checkpoint_mismatch | checkpoint_invalid
    detail: str
    seq: int | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found for one chain. `ok` is False when anything was found in `breaks`."""

    chain: str
    ok: bool
    events: int
    sealed: int
    unkeyed: int  # rows written before the keyed chain (0017), checked by their unkeyed hash
    redacted: int  # rows pseudonymised by a GDPR erasure (MAC checked, unkeyed hash not)
    first_seq: int | None
    last_seq: int | None
    head_mac: str | None
    anchor_seq: int | None
    checkpoints: int
    latest_checkpoint_seq: int | None
    key_ids: list[str]
    breaks: list[ChainBreak] = field(default_factory=list)
    verified_at: str = ""

    @property
    def first_broken_id(self) -> str | None:
        return next((b.event_id for b in self.breaks if b.event_id), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_VERIFY_SQL = """
SELECT id, seq, tenant_id, ts, actor, actor_role, action, resource_type, resource_id, outcome, details, prev_hash,
       hash, hash_alg, key_id, mac,
       eap_audit_digest(prev_hash, id, tenant_id, ts, actor, actor_role, action, resource_type, resource_id,
                        outcome, details) AS sql_digest
FROM audit_events WHERE {where} AND seq > :after ORDER BY seq
"""
MAX_BREAKS = 20


def _anchor(session: Session, tenant_id: uuid.UUID | None, keys: AuditKeys,
            breaks: list[ChainBreak]) -> tuple[int, str | None, str | None, int | None]:
    """(seq to start after, prev hash, prev MAC, anchor seq) from the newest anchor of the chain."""
    row = session.execute(text(f"SELECT seq, hash, mac, key_id, purged, sig, tenant_id FROM audit_anchors "
                               f"WHERE {_chain_where(tenant_id)} ORDER BY seq DESC LIMIT 1"),
                          _params(tenant_id)).one_or_none()
    if row is None:
        return 0, None, None, None
    body = _anchor_body(tenant_id, int(row.seq), row.hash, row.mac, row.key_id, int(row.purged))
    try:
        good = hmac.compare_digest(_sign(keys, row.key_id, body), row.sig)
    except KeyError:
        good = False
    if not good:
        breaks.append(ChainBreak("anchor_invalid", f"the retention anchor at seq {row.seq} is not signed by the "
                                 "audit key", seq=int(row.seq)))
    return int(row.seq), row.hash, row.mac, int(row.seq)


def verify(session: Session, tenant_id: uuid.UUID | None, *, use_checkpoints: bool = True) -> VerifyResult:
    """Verify one chain (tenant_id None: the platform chain, which only the owner role can read): the unkeyed
    links, every row's keyed MAC, the retention anchor, and that every signed checkpoint newer than the anchor
    is still in the chain (truncation)."""
    keys = load_keys()
    # Checkpoints are listed before the rows are read: each names rows committed before it was written.
    cps = read_checkpoints(tenant_id) if use_checkpoints else []
    breaks: list[ChainBreak] = []
    after, prev_hash, prev_mac, anchor_seq = _anchor(session, tenant_id, keys, breaks)
    n = sealed = unkeyed = redacted = 0
    first_seq: int | None = None
    last: Any = None
    kids: set[str] = set()
    by_seq: dict[int, tuple[str, str | None]] = {}
    rows = session.execute(text(_VERIFY_SQL.format(where=_chain_where(tenant_id))),
                           {**_params(tenant_id), "after": after})
    for r in rows:
        n += 1
        first_seq = first_seq if first_seq is not None else int(r.seq)
        by_seq[int(r.seq)] = (r.hash, r.mac)
        is_redacted = _redacted(r)
        redacted += is_redacted
        if r.prev_hash != prev_hash:
            breaks.append(ChainBreak("link_broken", "the row does not follow the one before it (a row was deleted, "
                                     "inserted or moved)", int(r.seq), str(r.id)))
        if r.mac is None:
            if sealed:
                breaks.append(ChainBreak("unsealed", "a row without a MAC after sealed rows", int(r.seq), str(r.id)))
            unkeyed += 1
            expected = r.sql_digest if r.hash_alg == 2 else _digest(r.prev_hash, _payload(r))
            if expected != r.hash and not is_redacted:
                breaks.append(ChainBreak("hash_mismatch", "the row's content does not match its hash", int(r.seq),
                                         str(r.id)))
        else:
            sealed += 1
            kids.add(r.key_id)
            try:
                good = hmac.compare_digest(_mac(keys, r.key_id, prev_mac, r), r.mac)
            except KeyError:
                breaks.append(ChainBreak("unknown_key", f"sealed with key {r.key_id!r}, which is not in the audit "
                                         "key file", int(r.seq), str(r.id)))
                good = True
            if not good:
                breaks.append(ChainBreak("mac_mismatch", "the row's keyed MAC does not verify (edited, moved, or the "
                                         "chain was recomputed without the key)", int(r.seq), str(r.id)))
            elif not is_redacted and r.sql_digest != r.hash:
                breaks.append(ChainBreak("hash_mismatch", "the row's content does not match its hash", int(r.seq),
                                         str(r.id)))
        prev_hash, prev_mac, last = r.hash, r.mac, r
        if len(breaks) >= MAX_BREAKS:
            break
    checked = 0
    latest: int | None = None
    last_seq = int(last.seq) if last is not None else None
    for cp in cps:
        seq = cp.get("seq")
        if not isinstance(seq, int):
            breaks.append(ChainBreak("checkpoint_invalid", f"checkpoint {cp['path']} cannot be read"))
            continue
        if anchor_seq is not None and seq <= anchor_seq:
            continue
        checked += 1
        latest = max(latest or seq, seq)
        try:
            good = hmac.compare_digest(_sign(keys, str(cp.get("key_id")), {k: v for k, v in cp.items() if k != "path"}),
                                       str(cp.get("sig")))
        except KeyError:
            good = False
        if not good:
            breaks.append(ChainBreak("checkpoint_invalid", f"checkpoint {cp['path']} is not signed by the audit key",
                                     seq))
        elif seq not in by_seq:
            breaks.append(ChainBreak("checkpoint_missing", f"the row of the signed checkpoint at seq {seq} is gone"
                                     + (" (rows were removed from the end of the chain)"
                                        if last_seq is None or seq > last_seq else ""), seq))
        elif by_seq[seq] != (cp.get("hash"), cp.get("mac")):
            breaks.append(ChainBreak("checkpoint_mismatch", f"the row at seq {seq} differs from its signed checkpoint",
                                     seq))
    return VerifyResult(chain=chain_name(tenant_id), ok=not breaks, events=n, sealed=sealed, unkeyed=unkeyed,
                        redacted=redacted, first_seq=first_seq, last_seq=last_seq,
                        head_mac=last.mac if last is not None else None, anchor_seq=anchor_seq, checkpoints=checked,
                        latest_checkpoint_seq=latest, key_ids=sorted(kids), breaks=breaks,
                        verified_at=dt.datetime.now(dt.UTC).isoformat())


def verify_chain(session: Session, tenant_id: uuid.UUID | None) -> tuple[bool, int, str | None]:
    """(ok, events checked, id of the first broken event). tenant_id None: the platform chain. The full answer
    is `verify`."""
    res = verify(session, tenant_id)
    return res.ok, res.events, res.first_broken_id


def chains(session: Session) -> list[uuid.UUID | None]:
    """Every chain (owner role): each tenant's and the platform chain."""
    ids: list[uuid.UUID | None] = [r[0] for r in session.execute(text("SELECT id FROM tenants ORDER BY name"))]
    return [*ids, None]


def verify_all(session: Session) -> list[VerifyResult]:
    """`verify` for every chain (owner role)."""
    return [verify(session, t) for t in chains(session)]
