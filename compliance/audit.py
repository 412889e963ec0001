"""The audit trail: append-only, per-tenant chains that prove themselves with a key the database never sees.

Writing. There is one way in, the SQL function `audit_append` (SECURITY DEFINER, migrations 0012/0017): it
takes the chain's advisory lock (`pg_advisory_xact_lock`, held until the transaction ends), stamps id and
time, computes the unkeyed SHA-256 link (`hash` over the content and the previous row's hash) and inserts
the row. It refuses a tenant other than the session's and the decision events only the pipeline writes.
`record` then, *in the same transaction and so still under that lock*, computes the row's keyed MAC

    mac_n = HMAC-SHA256(K_mac[key_id], canonical(v, key_id, prev_mac, seq, id, tenant, ts, prev_hash, hash,
                                                 actor_role, action, resource_type, outcome,
                                                 ref(actor), ref(resource_id), ref(details)))

and seals the row with `audit_seal(id, key_id, mac)`, which refuses anything but the unsealed head of the
caller's own chain. Because the lock is held from the append to the commit, no other writer of that chain
can append between the two statements, so `prev_mac` (returned by `audit_append` under the lock) is the MAC
of the row directly before: the keyed chain is exactly as serial as the unkeyed one. Both statements run in
the caller's transaction; a rollback removes both. The SQL side never sees the key, and nothing in the
database can compute a MAC: a superuser who edits, deletes, reorders or inserts rows and recomputes every
unkeyed hash still cannot produce MACs that verify.

Keys. `EAP_AUDIT_KEY_FILE` (default EAP_HOME/secrets/audit_keys.json, 0600, created on first use) holds
`{"active": kid, "keys": {kid: secret}}`. `rotate_key()` adds a key and makes it active; old keys stay for
verification. Each row records the key id it was sealed with (the chain continues across a rotation:
mac_n covers mac_{n-1} whatever key made it). Three keys are derived from each secret: for MACs, for field
references and for checkpoint signatures.

Field references and GDPR. The MAC covers `actor`, `resource_id` and `details` through keyed references
(HMAC of the value) rather than the values themselves. A GDPR erasure replaces such a value by the marker
`erased:<ref>` (`{"erased": "<ref>"}` for details; `pseudonymise`, through the pipeline-only SQL function
`audit_redact`): the record stays, its MAC still verifies, and the person's identifier is gone. Without the
key nobody can link a marker to a person or forge one that verifies. The unkeyed hash of a redacted row no
longer matches (it covered the original); verification skips that check for redacted rows only.

Checkpoints and truncation. A chain whose newest rows are deleted is still internally consistent, so the
Dagster asset `audit_checkpoint` periodically signs each chain's head (seq, hash, MAC, count) and writes it
to an append-only file store outside the database (EAP_AUDIT_CHECKPOINT_DIR, one file per checkpoint, created
exclusively, never rewritten) and records an `audit.checkpoint` event. Verification requires every
checkpoint's row to be present with the same hash and MAC: removing rows up to and including a checkpointed
head is detected. Rows appended after the newest checkpoint can be removed undetected until the next one;
the checkpoint interval bounds that window.

Retention. Rows past their retention period are purged from the oldest end only (`purge_before`): the last
purged row's seq, hash and MAC become a signed anchor (`audit_anchors`) from which verification starts, and
the pipeline-only SQL function `audit_purge` deletes up to it (never the head). A forged anchor fails its
signature.

Rows written before 0017 carry no MAC (hash_alg 1: hashed here; 2: hashed in SQL); they verify by their
unkeyed hash as a prefix of the chain, and the first sealed row's MAC covers the last of them.

The platform chain (tenant_id NULL) holds denials no tenant can be attached to, e.g. a request without valid
credentials; only the owner role can read it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import uuid
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from core.errors import ConfigurationError
from core.llm.model import FAILURE_LISTENERS
from core.logging import current_request_id
from core.models import AuditEvent
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAC_VERSION = 3
MARKER = "erased:"


# --------------------------------------------------------------------------- the unkeyed hash (rows before 0012)


def _digest(prev_hash: str | None, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(((prev_hash or "") + "|" + body).encode()).hexdigest()


def _payload(ev: AuditEvent | Row[Any]) -> dict[str, Any]:
    return {
        "id": str(ev.id),
        "tenant_id": str(ev.tenant_id),
        "ts": ev.ts.astimezone(dt.UTC).isoformat(),
        "actor": ev.actor,
        "actor_role": ev.actor_role,
        "action": ev.action,
        "resource_type": ev.resource_type,
        "resource_id": ev.resource_id,
        "outcome": ev.outcome,
        "details": ev.details,
    }


def _clean(value: Any) -> Any:
    """JSON-safe and storable: PostgreSQL text and jsonb refuse NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _clean(str(value))  # datetimes, UUIDs, NaN/inf (not JSON) …


# --------------------------------------------------------------------------- keys (outside the database)


@dataclass(frozen=True)
class AuditKeys:
    active: str
    secrets: dict[str, bytes]

    def _derive(self, kid: str, purpose: bytes) -> bytes:
        secret = self.secrets.get(kid)
        if secret is None:
            raise KeyError(kid)
        return hmac.new(secret, b"eap-audit/" + purpose, hashlib.sha256).digest()

    def mac_key(self, kid: str) -> bytes:
        return self._derive(kid, b"mac")

    def ref_key(self, kid: str) -> bytes:
        return self._derive(kid, b"ref")

    def checkpoint_key(self, kid: str) -> bytes:
        return self._derive(kid, b"checkpoint")


def key_file(settings: Settings | None = None) -> Path:
    s = settings or get_settings()
    return (s.audit_key_file or s.secrets_dir / "audit_keys.json").expanduser()


_key_cache: dict[Path, tuple[tuple[int, int], AuditKeys]] = {}


def _new_kid() -> str:
    return dt.datetime.now(dt.UTC).strftime("k%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)


def _parse_keys(raw: str, path: Path) -> AuditKeys:
    try:
        data = json.loads(raw)
        keys = {str(k): base64.urlsafe_b64decode(str(v)) for k, v in data["keys"].items()}
        active = str(data["active"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"audit key file {path} is not valid: {exc}") from None
    if active not in keys or any(len(v) < 32 for v in keys.values()):
        raise ConfigurationError(f"audit key file {path}: the active key is missing or a key is shorter than 32 bytes")
    return AuditKeys(active, keys)


def _serialise(keys: AuditKeys) -> str:
    return json.dumps({"active": keys.active,
                       "keys": {k: base64.urlsafe_b64encode(v).decode() for k, v in keys.secrets.items()}})


def _write_private(path: Path, body: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _key_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_keys(settings: Settings | None = None) -> AuditKeys:
    """The audit keys (created with one fresh key on first use; every process of an instance reads the same
    file). Cached until the file changes."""
    path = key_file(settings)
    try:
        st = path.stat()
    except FileNotFoundError:
        with _key_lock(path):
            if not path.exists():
                _write_private(path, _serialise(AuditKeys(kid := _new_kid(), {kid: secrets.token_bytes(32)})))
                log.warning("created the audit key file %s: back it up with the database", path)
        st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _key_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    keys = _parse_keys(path.read_text(), path)
    _key_cache[path] = (stamp, keys)
    return keys


def rotate_key(settings: Settings | None = None) -> str:
    """Add a fresh key and make it the active one; older keys stay to verify the rows they sealed. Returns
    the new key id."""
    path = key_file(settings)
    load_keys(settings)
    with _key_lock(path):
        current = _parse_keys(path.read_text(), path)
        kid = _new_kid()
        _write_private(path, _serialise(AuditKeys(kid, {**current.secrets, kid: secrets.token_bytes(32)})))
    _key_cache.pop(path, None)
    return kid


# --------------------------------------------------------------------------- the keyed chain


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _marker_ref(name: str, value: Any) -> str | None:
    if name == "details":
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("erased"), str):
            return str(value["erased"])
        return None
    return value[len(MARKER):] if isinstance(value, str) and value.startswith(MARKER) else None


def field_ref(keys: AuditKeys, kid: str, name: str, value: Any) -> str:
    """The keyed reference the MAC covers for `actor`, `resource_id` and `details` (a marker carries its own)."""
    marked = _marker_ref(name, value)
    if marked is not None:
        return marked
    return hmac.new(keys.ref_key(kid), f"{name}|{_canonical(value)}".encode(), hashlib.sha256).hexdigest()


def _mac(keys: AuditKeys, kid: str, prev_mac: str | None, r: Any) -> str:
    body = {
        "v": MAC_VERSION, "kid": kid, "prev_mac": prev_mac, "seq": int(r.seq), "id": str(r.id),
        "tenant_id": str(r.tenant_id) if r.tenant_id else None, "ts": r.ts.astimezone(dt.UTC).isoformat(),
        "prev_hash": r.prev_hash, "hash": r.hash, "actor_role": r.actor_role, "action": r.action,
        "resource_type": r.resource_type, "outcome": r.outcome,
        "actor": field_ref(keys, kid, "actor", r.actor),
        "resource_id": field_ref(keys, kid, "resource_id", r.resource_id),
        "details": field_ref(keys, kid, "details", r.details),
    }
    return hmac.new(keys.mac_key(kid), _canonical(body).encode(), hashlib.sha256).hexdigest()


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    actor_role: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain (tenant_id None: the platform chain) through `audit_append` and
    seal it with its keyed MAC, in the caller's transaction (see the module docstring)."""
    clean = _clean(details or {})
    if (request_id := current_request_id()) is not None:  # the API request this happened in (core.logging)
        clean.setdefault("request_id", request_id)
    actor, actor_role, resource_id = _clean(actor), _clean(actor_role), _clean(resource_id)
    row = session.execute(
        text("SELECT * FROM audit_append(CAST(:t AS uuid), :actor, :action, :role, :rtype, :rid, :outcome, "
             "CAST(:details AS jsonb))"),
        {"t": str(tenant_id) if tenant_id else None, "actor": actor, "action": action, "role": actor_role,
         "rtype": resource_type, "rid": resource_id, "outcome": outcome, "details": json.dumps(clean)},
    ).one()
    ev = AuditEvent(id=row.id, seq=row.seq, tenant_id=tenant_id, ts=row.ts, actor=actor, actor_role=actor_role,
                    action=action, resource_type=resource_type, resource_id=resource_id, outcome=outcome,
                    details=row.details, prev_hash=row.prev_hash, hash=row.hash)
    keys = load_keys()
    mac = _mac(keys, keys.active, row.prev_mac, ev)
    session.execute(text("SELECT audit_seal(:id, :kid, :mac)"), {"id": row.id, "kid": keys.active, "mac": mac})
    return ev


def record_detached(tenant_id: uuid.UUID | None, **event: Any) -> None:
    """Append in a transaction of its own, as the application role, so the record survives the caller's
    rollback (denials, failures). Never raises: a failure to audit is logged instead."""
    from core.db.database import app_engine, tenant_session

    try:
        if tenant_id is not None:
            with tenant_session(tenant_id) as s:
                record(s, tenant_id=tenant_id, **event)
        else:
            with Session(app_engine()) as s, s.begin():
                record(s, tenant_id=None, **event)
    except Exception:
        log.exception("audit record %s could not be written", event.get("action"))


@dataclass(frozen=True)
class Actor:
    tenant_id: uuid.UUID | None
    actor: str
    actor_role: str | None = None


_actor: ContextVar[Actor | None] = ContextVar("eap_audit_actor", default=None)


def bind_actor(tenant_id: uuid.UUID | None, actor: str, actor_role: str | None = None) -> Token[Any]:
    """Who the current request (or task) acts for, for records written where no principal is at hand
    (e.g. a failed model call deep in an agent). The API binds it once it has authenticated a request
    (each request runs in a context of its own); `unbind_actor(token)` restores the previous one."""
    return _actor.set(Actor(tenant_id, actor, actor_role))


def unbind_actor(token: Token[Any]) -> None:
    _actor.reset(token)


def record_failure(action: str, *, resource_type: str, resource_id: str, details: dict[str, Any]) -> None:
    """A failure as its own record (own transaction) for the bound actor, or the platform chain with
    actor `system` when nothing is bound (Dagster runs, CLI)."""
    who = _actor.get() or Actor(None, "system")
    record_detached(who.tenant_id, actor=who.actor, actor_role=who.actor_role, action=action,
                    resource_type=resource_type, resource_id=resource_id, outcome="failure", details=details)


def record_restricted_read(session: Session, *, tenant_id: uuid.UUID | None, actor: str, actor_role: str | None,
                           resource_type: str, resource_id: str, labels: list[dict[str, Any]]) -> bool:
    """Record a read of stored answers or a trace that carry Class III/IV content, in the caller's
    transaction. `labels` are the access labels of what is being shown (agents/answer_access.py:
    {"classification": highest class, "sources": [{"document_id", "classification"}, …]}); one event
    `<resource_type>.read_restricted` names the Class III/IV documents and the highest class. Returns
    whether it recorded."""
    top = max((int(lb.get("classification") or 1) for lb in labels if lb), default=1)
    if top < 3:
        return False
    docs = sorted({str(src.get("document_id")) for lb in labels if lb for src in lb.get("sources", [])
                   if int(src.get("classification") or 1) >= 3})
    record(session, tenant_id=tenant_id, actor=actor, actor_role=actor_role, action=f"{resource_type}.read_restricted",
           resource_type=resource_type, resource_id=resource_id, details={"documents": docs, "max_class": top})
    return True


# --------------------------------------------------------------------------- checkpoints (outside the database)


def checkpoint_dir(settings: Settings | None = None) -> Path:
    s = settings or get_settings()
    return (s.audit_checkpoint_dir or s.home / "audit-checkpoints").expanduser()


def chain_name(tenant_id: uuid.UUID | str | None) -> str:
    return str(uuid.UUID(str(tenant_id))) if tenant_id is not None else "platform"


def _sign(keys: AuditKeys, kid: str, body: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in body.items() if k != "sig"}
    return hmac.new(keys.checkpoint_key(kid), _canonical(unsigned).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    seq: int
    hash: str
    mac: str | None
    events: int
    key_id: str
    at: str
    path: str


def _chain_where(tenant_id: uuid.UUID | None) -> str:
    return "tenant_id = CAST(:t AS uuid)" if tenant_id is not None else "tenant_id IS NULL"


def _params(tenant_id: uuid.UUID | None) -> dict[str, Any]:
    return {"t": str(tenant_id) if tenant_id is not None else None}


def write_checkpoint(session: Session, tenant_id: uuid.UUID | None) -> Checkpoint | None:
    """Sign the chain's head (as committed: the caller's session must not hold uncommitted appends) and add it
    to the checkpoint store. None when the chain is empty; the existing checkpoint when the head has not moved."""
    head = session.execute(text(f"SELECT seq, hash, mac FROM audit_events WHERE {_chain_where(tenant_id)} "
                                "ORDER BY seq DESC LIMIT 1"), _params(tenant_id)).one_or_none()
    if head is None:
        return None
    events = int(session.execute(text(f"SELECT count(*) FROM audit_events WHERE {_chain_where(tenant_id)}"),
                                 _params(tenant_id)).scalar_one())
    keys = load_keys()
    chain = chain_name(tenant_id)
    folder = checkpoint_dir() / chain
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{int(head.seq):020d}.json"
    body: dict[str, Any] = {"v": 1, "chain": chain, "seq": int(head.seq), "hash": head.hash, "mac": head.mac,
                            "events": events, "key_id": keys.active, "at": dt.datetime.now(dt.UTC).isoformat()}
    body["sig"] = _sign(keys, keys.active, body)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:  # the head has not moved since the last checkpoint: append-only, keep that one
        old = json.loads(path.read_text())
        return Checkpoint(chain, old["seq"], old["hash"], old.get("mac"), old["events"], old["key_id"], old["at"],
                          str(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(body, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    return Checkpoint(chain, body["seq"], body["hash"], body["mac"], events, keys.active, body["at"], str(path))


def read_checkpoints(tenant_id: uuid.UUID | None) -> list[dict[str, Any]]:
    folder = checkpoint_dir() / chain_name(tenant_id)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            data = {"unreadable": True}
        data["path"] = str(p)
        out.append(data)
    return out


# --------------------------------------------------------------------------- verification


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


def _anchor_body(tenant_id: uuid.UUID | None, seq: int, hash_: str, mac: str | None, kid: str,
                 purged: int) -> dict[str, Any]:
    return {"v": 1, "kind": "anchor", "chain": chain_name(tenant_id), "seq": seq, "hash": hash_, "mac": mac,
            "key_id": kid, "purged": purged}


def _redacted(r: Any) -> bool:
    return any(_marker_ref(n, getattr(r, n)) is not None for n in ("actor", "resource_id", "details"))


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


# --------------------------------------------------------------------------- reading, erasure, retention


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


def _record_model_failure(model: str, exc: Exception) -> None:
    record_failure("model.call.failed", resource_type="model", resource_id=model,
                   details={"error": type(exc).__name__})


FAILURE_LISTENERS.append(_record_model_failure)
