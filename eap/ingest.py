"""`eap ingest PATH...`: submit files or folders through the same code path as the upload API,
then wait (with a progress line) until each is indexed, awaiting approval, rejected or failed."""

from __future__ import annotations

import sys
from pathlib import Path

from core.parsing import EXTENSIONS


def collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS
                                and not f.name.startswith(".")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def submit_paths(tenant_id, files: list[Path], *, classification: str, acl: str | None, actor: str,
                 root: Path | None = None, out=sys.stdout) -> tuple[list, list]:  # noqa: ANN001
    from core.errors import PlatformError
    from pipeline import ingestion

    queued, refused = [], []
    for f in files:
        key = f"file:{f.resolve().relative_to(root) if root else f.resolve()}"
        try:
            with f.open("rb") as fh:
                sub = ingestion.submit_document(tenant_id, filename=f.name, stream=fh, classification=classification,
                                                acl_groups=acl, actor=actor, source="cli", source_key=key)
        except PlatformError as exc:
            refused.append((f, exc.message))
            print(f"  refused {f}: {exc.message}", file=out)
            continue
        queued.append((f, sub))
    return queued, refused


def run_ingest(paths: list[str], tenant: str, classification: str, acl: str | None, wait: bool,
               timeout: float) -> int:
    from core.database import bootstrap
    from core.tenancy import get_tenant
    from pipeline.ingestion import wait_for

    bootstrap()
    ref = get_tenant(tenant)
    try:
        files = collect(paths)
    except FileNotFoundError as exc:
        print(f"eap: error: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("eap: error: no supported files found", file=sys.stderr)
        return 2
    queued, refused = submit_paths(ref.id, files, classification=classification, acl=acl, actor="cli")
    unchanged = sum(1 for _, s in queued if s.unchanged)
    print(f"{len(queued)} submitted ({unchanged} unchanged), {len(refused)} refused")
    if not wait or not queued:
        return 1 if refused else 0
    ids = [s.document_id for _, s in queued]
    names = {s.document_id: f for f, s in queued}

    def progress(rows: dict) -> None:
        done = sum(1 for s in rows.values() if s in ("indexed", "awaiting_approval", "rejected", "failed"))
        width = 30
        bar = "#" * int(width * done / len(ids)) + "." * (width - int(width * done / len(ids)))
        counts = {k: sum(1 for s in rows.values() if s == k) for k in ("indexed", "awaiting_approval", "failed")}
        sys.stdout.write(f"\r[{bar}] {done}/{len(ids)}  indexed {counts['indexed']}  awaiting approval "
                         f"{counts['awaiting_approval']}  failed {counts['failed']}  ")
        sys.stdout.flush()

    rows = wait_for(ref.id, ids, timeout, progress)
    print()
    pending = [names[i] for i in ids if rows.get(i) in ("queued", "parsing", None)]
    if pending:
        print(f"timed out with {len(pending)} documents still queued: is `eap up` running? "
              "(its Dagster daemon runs the ingestion)")
        return 1
    from sqlalchemy import select

    from core.database import tenant_session
    from core.models import Document

    with tenant_session(ref.id) as s:
        bad = s.execute(select(Document.filename, Document.status, Document.status_reason)
                        .where(Document.id.in_(ids), Document.status.in_(["failed", "rejected"]))).all()
    for fn, st, reason in bad:
        print(f"  {st}: {fn}: {reason}")
    return 1 if (bad or refused) else 0
