"""The audit keys, held outside the database: `EAP_AUDIT_KEY_FILE` (default EAP_HOME/secrets/audit_keys.json,
0600, created on first use) with `{"active": kid, "keys": {kid: secret}}`. `rotate_key()` adds a key and makes it
active; old keys stay to verify what they sealed. Three keys are derived from each secret: for MACs, for field
references and for checkpoint (and anchor) signatures."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


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
