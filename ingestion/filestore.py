"""Content-addressed store for original uploads: EAP_HOME/files/ab/abcdef… (sha256).

Writes stream to a temporary file in the same folder, hash as they go, enforce the size limit
before the whole body is read, and publish with an atomic rename.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidInput

READ_SIZE = 1024 * 1024


class EmptyFile(InvalidInput):
    code = "empty_file"


class FileTooLarge(InvalidInput):
    code = "file_too_large"
    status_code = 413


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    path: Path
    created: bool  # False when the same content was already stored


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _private_dir(self, d: Path) -> None:
        """Originals of Class IV documents: folders owner-only (0700), whatever the umask."""
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if d.stat().st_mode & 0o077:
            d.chmod(0o700)

    def put_stream(self, stream: BinaryIO, max_bytes: int) -> StoredBlob:
        self._private_dir(self.root)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(READ_SIZE)
                    if not block:
                        break
                    size += len(block)
                    if size > max_bytes:
                        raise FileTooLarge(
                            f"upload exceeds the limit of {max_bytes} bytes", details={"limit_bytes": max_bytes}
                        )
                    h.update(block)
                    out.write(block)
            if size == 0:
                raise EmptyFile("the file is empty")
            digest = h.hexdigest()
            final = self.path_for(digest)
            self._private_dir(final.parent)
            created = not final.exists()
            if created:
                os.chmod(tmp, 0o600)  # mkstemp's mode already; stated here because it is the contract
                os.replace(tmp, final)
            return StoredBlob(digest, size, final, created)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_bytes(self, data: bytes, max_bytes: int) -> StoredBlob:
        import io

        return self.put_stream(io.BytesIO(data), max_bytes)

    def read(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def discard(self, blob: StoredBlob) -> None:
        if blob.created:
            blob.path.unlink(missing_ok=True)

    def remove(self, sha256: str) -> None:
        """Delete one original for good. The caller checks (under a lock) that nothing references it."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):  # never a path: only our own hex names are removable
            raise ValueError(f"not a content hash: {sha256!r}")
        # The two-character fan-out folder stays: a concurrent upload may be about to publish into it.
        self.path_for(sha256).unlink(missing_ok=True)
