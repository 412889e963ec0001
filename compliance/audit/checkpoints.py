"""Signed checkpoints of a chain's head in an append-only store outside the database (EAP_AUDIT_CHECKPOINT_DIR: one
file per checkpoint, created exclusively, never rewritten): rows removed from the end of a chain are detected."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.audit.chain import _chain_where, _params, _sign, chain_name
from compliance.audit.keys import load_keys
from core.settings import Settings, get_settings


def checkpoint_dir(settings: Settings | None = None) -> Path:
    s = settings or get_settings()
    return (s.audit_checkpoint_dir or s.home / "audit-checkpoints").expanduser()


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
