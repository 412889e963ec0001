"""`eap ingest PATH...`: submit files or folders through the same code path as the upload API,
then wait (with a progress line) until each is indexed, awaiting approval, rejected or failed — for
as long as the pipeline makes progress (`--idle-timeout` without any is the limit), showing documents/s and
an ETA; when it stops it says what is stuck (eap/ingest_status.py).

Folders are walked without following links: a link inside a folder is refused (and reported), and
every file is opened without following links, as a single-named regular file physically inside the
folder and outside the platform's private folders (ingestion/source_files.py) — a link planted in a
folder cannot make the CLI ingest the signing key or the file store."""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.enums import DocumentStatus
from eap.ingest_status import Throughput, diagnose, open_instance
from ingestion.parsing import EXTENSIONS


@dataclass(frozen=True)
class Source:
    path: Path
    folder: Path | None = None  # set when found by walking a folder: must lie physically inside it


def collect(paths: list[str], refused: list[tuple[Path, str]] | None = None) -> list[Source]:
    from ingestion import source_files

    files: list[Source] = []
    for p in map(Path, paths):
        if p.is_dir():
            folder = Path(os.path.realpath(p))
            found, links = source_files.walk(folder)
            files.extend(Source(f, folder) for f in found
                         if f.suffix.lower() in EXTENSIONS and not f.name.startswith("."))
            if refused is not None:
                refused.extend(links)
        elif p.is_file():
            files.append(Source(p))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def submit_paths(tenant_id: uuid.UUID, files: Sequence[Path | Source], *, classification: str, acl: str | None,
                 actor: str, root: Path | None = None, out: TextIO | None = None) -> tuple[list, list]:
    from core.errors import PlatformError
    from ingestion import source_files, submission

    out = out or sys.stdout  # looked up at call time (a default argument would pin the import-time stream)

    queued, refused = [], []
    for item in files:
        src = item if isinstance(item, Source) else Source(item)
        f = src.path
        key = f"file:{f.resolve().relative_to(root) if root else f.resolve()}"
        try:
            opened = source_files.open_inside(src.folder, f) if src.folder else source_files.open_named(f)
            with opened as fh:
                sub = submission.submit_document(tenant_id, filename=f.name, stream=fh, classification=classification,
                                                acl_groups=acl, actor=actor, source="cli", source_key=key)
        except PlatformError as exc:
            refused.append((f, exc.message))
            print(f"  refused {f}: {exc.message}", file=out)
            if isinstance(exc, source_files.RefusedFile):
                source_files.record_refusal(tenant_id, str(f), exc.message, actor=actor)
            continue
        queued.append((f, sub))
    return queued, refused


def run_ingest(paths: list[str], tenant: str, classification: str, acl: str | None, wait: bool,
               timeout: float | None, idle_timeout: float = 900.0) -> int:
    from core.db.database import bootstrap
    from identity.tenancy import get_tenant
    from ingestion.submission import wait_for

    bootstrap()
    ref = get_tenant(tenant)
    links: list[tuple[Path, str]] = []
    try:
        files = collect(paths, links)
    except FileNotFoundError as exc:
        print(f"eap: error: {exc}", file=sys.stderr)
        return 2
    from ingestion.source_files import record_refusal

    for link, reason in links:
        print(f"  refused {link}: {reason}")
        record_refusal(ref.id, str(link), reason, actor="cli")
    if not files:
        print("eap: error: no supported files found", file=sys.stderr)
        return 2
    queued, refused = submit_paths(ref.id, files, classification=classification, acl=acl, actor="cli")
    refused += links
    unchanged = sum(1 for _, s in queued if s.unchanged)
    print(f"{len(queued)} submitted ({unchanged} unchanged), {len(refused)} refused")
    if not wait or not queued:
        return 1 if refused else 0
    ids = [s.document_id for _, s in queued]
    names = {s.document_id: f for f, s in queued}
    since = dt.datetime.now(dt.UTC)
    meter = Throughput(len(ids))

    def progress(rows: dict[uuid.UUID, str]) -> None:
        sys.stdout.write("\r" + meter.line(rows) + "  ")
        sys.stdout.flush()

    rows = wait_for(ref.id, ids, timeout, progress, idle_timeout_s=idle_timeout)
    print()
    pending = [names[i] for i in ids if rows.get(i) in (DocumentStatus.queued, DocumentStatus.parsing, None)]
    if pending:
        print(f"stopped waiting with {len(pending)} document(s) still queued or in progress: nothing moved for "
              f"{idle_timeout:.0f} s (--idle-timeout)" + (" or past --timeout" if timeout else "") + ". What is stuck:")
        try:
            instance = open_instance()
        except Exception as exc:  # noqa: BLE001 - the diagnosis says what it could not read
            print(f"  (Dagster's run storage could not be read: {type(exc).__name__}: {str(exc)[:200]})")
            instance = None
        for line in diagnose(instance, ref.id, ids, since):
            print(f"  - {line}")
        return 1
    from sqlalchemy import select

    from core.db.database import tenant_session
    from core.models import Document

    with tenant_session(ref.id) as s:
        bad = s.execute(select(Document.filename, Document.status, Document.status_reason)
                        .where(Document.id.in_(ids),
                               Document.status.in_([DocumentStatus.failed, DocumentStatus.rejected]))).all()
    for filename, outcome, why in bad:
        print(f"  {outcome}: {filename}: {why}")
    return 1 if (bad or refused) else 0
