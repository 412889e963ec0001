"""Reading source files for ingestion (inbox sensor, `eap ingest`) without following links.

Only a regular file with a single name that physically lies inside the folder being ingested may be
read: every folder on the way is opened with O_NOFOLLOW relative to its parent's descriptor (a
symlinked tenant folder or sub-folder fails there), the file itself with O_NOFOLLOW, and the opened
descriptor is checked — regular file, exactly one hard link (a second name for a platform file
would otherwise pass), real path still inside the folder and outside the platform's private
folders (secrets, file store, stage products, database, Dagster home, logs). Checks made on the
descriptor cannot be raced by swapping the path afterwards.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidInput
from core.settings import Settings, get_settings

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the inbox must not hang the sensor.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class RefusedFile(InvalidInput):
    code = "file_refused"


def private_dirs(settings: Settings | None = None) -> list[str]:
    """Platform folders no ingestion path may read from (real paths)."""
    s = settings or get_settings()
    dirs = [s.secrets_dir, s.file_store_dir, s.pipeline_dir, s.pgdata_dir, s.dagster_home, s.home / "logs"]
    return [os.path.realpath(d) for d in dirs]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _real_path(fd: int, fallback: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def _check_fd(fd: int, shown: str, root: str | None, settings: Settings | None) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile("not a regular file")
    real = _real_path(fd, shown)
    if root is not None and not _inside(real, root):
        raise RefusedFile("lies outside the folder being ingested")
    for d in private_dirs(settings):
        if _inside(real, d):
            raise RefusedFile("lies in a private platform folder")
    if st.st_nlink != 1:
        raise RefusedFile(f"has {st.st_nlink} hard links (a second name for another file); copy the file "
                          "instead of linking it")


def _refusal(exc: OSError, shown: str) -> RefusedFile | None:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return RefusedFile("symbolic link (links are not followed)")
    if exc.errno == errno.ENOTDIR:
        return RefusedFile("a folder on its path is a symbolic link or not a folder")
    if exc.errno == errno.ENXIO:
        return RefusedFile("not a regular file")
    return None


def open_inside(root: Path, path: Path, settings: Settings | None = None) -> BinaryIO:
    """Open `path`, which must lie physically inside `root` (no link anywhere below `root`)."""
    root_real = os.path.realpath(root)
    rel = path.relative_to(root)
    shown = str(rel)
    if not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise RefusedFile(f"not a file inside {root.name}/")
    dfd = os.open(root_real, _DIR_FLAGS)
    try:
        for part in rel.parts[:-1]:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                refused = _refusal(exc, shown)
                if refused is not None:
                    raise refused from None
                raise
            os.close(dfd)
            dfd = nfd
        try:
            fd = os.open(rel.parts[-1], _FILE_FLAGS, dir_fd=dfd)
        except OSError as exc:
            refused = _refusal(exc, shown)
            if refused is not None:
                raise refused from None
            raise
    finally:
        os.close(dfd)
    try:
        _check_fd(fd, shown, root_real, settings)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def open_named(path: Path, settings: Settings | None = None) -> BinaryIO:
    """Open a file named explicitly on a command line: links in the name are the caller's choice and
    are resolved first, but the result must still be a single-named regular file outside the
    platform's private folders."""
    real = os.path.realpath(path)
    try:
        fd = os.open(real, _FILE_FLAGS)
    except OSError as exc:
        refused = _refusal(exc, str(path))
        if refused is not None:
            raise refused from None
        raise
    try:
        _check_fd(fd, str(path), None, settings)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def walk(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files under `root` (sorted) without following links, and the links found (refused, with why)."""
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                refused.append((here / d, "symbolic link to a folder (links are not followed)"))
                dirnames.remove(d)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            p = here / f
            if p.is_symlink():
                refused.append((p, "symbolic link (links are not followed)"))
            else:
                files.append(p)
    return sorted(files), sorted(refused)


def record_refusal(tenant_id: uuid.UUID, rel: str, reason: str, actor: str) -> None:
    """An audit record for a refused source file (the tenant's security officer sees the attempt)."""
    from compliance import audit
    from core.db.database import tenant_session

    with tenant_session(tenant_id) as s:
        audit.record(s, tenant_id=tenant_id, actor=actor, action="document.source_refused", resource_type="file",
                     resource_id=rel[:500], outcome="failure", details={"reason": reason})
