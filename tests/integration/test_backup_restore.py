"""Backup → restore into an empty database (issue 16, RUNBOOK): `eap db backup` of a live platform database
and file store, `eap db restore` into a new, empty database and file store; the same documents and chunks
come back, the originals are byte-identical and every tenant's audit chain verifies."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from compliance import audit
from core.settings import get_settings
from tests.builders import index_plant, upload_file

EAP = str(Path(sys.executable).parent / "eap")
REPO = Path(__file__).resolve().parents[2]


def _snapshot(url: str) -> dict:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return {
                "documents": conn.execute(sa.text("SELECT id, tenant_id, content_hash, status, classification "
                                                  "FROM documents ORDER BY id")).all(),
                "chunks": conn.execute(sa.text("SELECT id, document_id, md5(text), embedding::text "
                                               "FROM chunks ORDER BY id")).all(),
                "audit": conn.execute(sa.text("SELECT id, hash FROM audit_events ORDER BY id")).all(),
                "tenants": conn.execute(sa.text("SELECT id FROM tenants")).scalars().all(),
            }
    finally:
        eng.dispose()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def restored_db(platform_db):
    name = f"eaprestore_{uuid.uuid4().hex[:8]}"
    yield name
    eng = sa.create_engine(platform_db.maintenance, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        for db in (name, f"{name}_dagster"):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    eng.dispose()


def test_backup_restore_into_empty_database(platform_db, client, make_tenant, tmp_path, restored_db):
    t = index_plant(make_tenant("bk"))
    r = upload_file(client, t, "bk-note.txt", b"Backup drill note: press P3 torque 85 Nm.")
    assert r.status_code in (200, 201, 202), r.text
    source = _snapshot(platform_db.admin)
    assert source["documents"] and source["chunks"] and source["audit"]
    # Other test modules break some chains on purpose (tamper tests): a restore must keep every verdict.
    live = sa.create_engine(platform_db.admin)
    try:
        with Session(live) as s:
            verdicts = {tid: audit.verify_chain(s, tid)[0] for tid in [*source["tenants"], None]}
    finally:
        live.dispose()
    assert verdicts[t.id]

    out = tmp_path / "backup"
    b = subprocess.run([EAP, "db", "backup", str(out)], capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr
    assert {"platform.dump", "files.tar.gz", "manifest.json"} <= {p.name for p in out.iterdir()}

    store = tmp_path / "restored-files"
    env = dict(os.environ, EAP_DB_NAME=restored_db, EAP_FILE_STORE=str(store))
    r = subprocess.run([EAP, "db", "restore", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    # A second restore over the now non-empty database is refused, not merged.
    again = subprocess.run([EAP, "db", "restore", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "not empty" in again.stderr

    restored_url = make_url(platform_db.admin).set(database=restored_db).render_as_string(hide_password=False)
    restored = _snapshot(restored_url)
    # Rows written to the live database after the backup's snapshot are not in it; everything in it is.
    backed_up = {row.id for row in restored["documents"]}
    assert backed_up == {row.id for row in source["documents"]}
    assert restored["chunks"] == source["chunks"]
    assert set(restored["audit"]) <= set(_snapshot(platform_db.admin)["audit"])
    assert set(source["audit"]) <= set(restored["audit"])
    assert _files(store) == _files(get_settings().file_store_dir)

    eng = sa.create_engine(restored_url)
    try:
        with Session(eng) as s:
            for tenant_id in [*restored["tenants"], None]:
                ok, n, broken = audit.verify_chain(s, tenant_id)
                assert ok == verdicts.get(tenant_id, True), (tenant_id, n, broken)
            ok, n, _ = audit.verify_chain(s, t.id)
            assert ok and n >= 1
    finally:
        eng.dispose()


def test_restore_refuses_a_tampered_backup(platform_db, tmp_path, restored_db):
    out = tmp_path / "backup"
    assert subprocess.run([EAP, "db", "backup", str(out)], capture_output=True, timeout=300).returncode == 0
    with open(out / "platform.dump", "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    env = dict(os.environ, EAP_DB_NAME=restored_db, EAP_FILE_STORE=str(tmp_path / "files"))
    r = subprocess.run([EAP, "db", "restore", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "checksum" in r.stderr, r.stderr
