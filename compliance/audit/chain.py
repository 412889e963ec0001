"""The chain's arithmetic, shared by writing, verification, checkpoints and retention: the unkeyed SHA-256 link of
rows before 0017, the keyed MAC and the keyed field references it covers, and the signatures of checkpoints and
retention anchors. See the package docstring (compliance/audit/__init__.py) for what each protects against."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import uuid
from typing import Any

from sqlalchemy import Row

from compliance.audit.keys import AuditKeys
from core.models import AuditEvent

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


# --------------------------------------------------------------------------- chains, signatures


def chain_name(tenant_id: uuid.UUID | str | None) -> str:
    return str(uuid.UUID(str(tenant_id))) if tenant_id is not None else "platform"


def _sign(keys: AuditKeys, kid: str, body: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in body.items() if k != "sig"}
    return hmac.new(keys.checkpoint_key(kid), _canonical(unsigned).encode(), hashlib.sha256).hexdigest()


def _chain_where(tenant_id: uuid.UUID | None) -> str:
    return "tenant_id = CAST(:t AS uuid)" if tenant_id is not None else "tenant_id IS NULL"


def _params(tenant_id: uuid.UUID | None) -> dict[str, Any]:
    return {"t": str(tenant_id) if tenant_id is not None else None}


def _anchor_body(tenant_id: uuid.UUID | None, seq: int, hash_: str, mac: str | None, kid: str,
                 purged: int) -> dict[str, Any]:
    return {"v": 1, "kind": "anchor", "chain": chain_name(tenant_id), "seq": seq, "hash": hash_, "mac": mac,
            "key_id": kid, "purged": purged}


def _redacted(r: Any) -> bool:
    return any(_marker_ref(n, getattr(r, n)) is not None for n in ("actor", "resource_id", "details"))
