"""Issue 12 finding 1 (and the file-permission part of 11): the inbox and `eap ingest` read only
regular, single-named files physically inside the folder being ingested. Each attack plants a link
in the file system, runs the real inbox sensor / CLI and the real ingest job, and shows the file
refused (moved aside, audited) and its content not searchable."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from ingestion import submission
from tests.integration.ingest_harness import Pipeline

OTHER_SECRET = "Furnace recipe FR-77 uses argon at 1340 degrees, export controlled"
MY_TEXT = "Clean the die with solvent S-4 after every shift."


@pytest.fixture(scope="module")
def pipeline(platform_db):
    return Pipeline()


def _search(client, tenant, query: str) -> list[str]:
    tok = mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name, role=Role.admin, subject="admin@t",
                     groups=["qa", "rnd"])
    r = client.post("/v1/search", json={"query": query, "k": 10}, headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    return [h["text"] for h in r.json()["hits"]]


def _documents(tenant) -> dict[str, str]:
    with tenant_session(tenant.id) as s:
        return dict(s.execute(text("SELECT filename, status FROM documents")).all())


def _other_tenants_original(make_tenant) -> Path:
    """A Class IV original of another tenant, in the content-addressed store."""
    other = make_tenant("victim")
    body = io.BytesIO(f"# FR-77\n\n{OTHER_SECRET}".encode())
    sub = submission.submit_document(other.id, filename="recipe.md", stream=body, classification="IV",
                                    acl_groups=["rnd"], actor="test")
    with tenant_session(other.id) as s:
        path = Path(s.execute(text("SELECT storage_path FROM documents WHERE id = :i"),
                              {"i": str(sub.document_id)}).scalar())
        # Not this test's subject: keep it out of later ingest runs.
        s.execute(text("DELETE FROM documents WHERE id = :i"), {"i": str(sub.document_id)})
    assert path.exists()
    return path


def test_inbox_refuses_links_and_hard_links(client, pipeline, make_tenant, tmp_path):
    settings = get_settings()
    pipeline.inbox()  # what other tests left in the inbox is seen once, before this test's files
    me, linked = make_tenant("inboxsec"), make_tenant("linkedtenant")
    jwt_secret = settings.jwt_signing_secret()
    secret_file = settings.secrets_dir / "jwt_secret"
    original = _other_tenants_original(make_tenant)
    inbox = settings.inbox_dir
    mine = inbox / me.name
    mine.mkdir(parents=True)
    (mine / "sop-4.md").write_text(f"# SOP-4\n\n{MY_TEXT}")  # the control: a plain file is ingested
    os.symlink(secret_file, mine / "key.txt")  # the JWT signing secret
    os.symlink(original, mine / "recipe.md")  # another tenant's Class IV original
    os.symlink("/etc/passwd", mine / "passwd.txt")  # a system file
    os.link(secret_file, mine / "hard.txt")  # a hard link: a second name for the signing secret
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.md").write_text(f"# Leak\n\n{OTHER_SECRET}")
    os.symlink(outside, mine / "sub")  # a symlinked folder inside the tenant's folder
    os.symlink(outside, inbox / linked.name)  # a symlinked tenant folder

    msg = pipeline.inbox()
    assert "1 submitted" in msg and "6 refused" in msg, msg
    for name in ("key.txt", "recipe.md", "passwd.txt", "hard.txt", "sub", linked.name):
        assert name in msg
    assert "symbolic link" in msg and "hard links" in msg
    # Moved aside (the links themselves, targets untouched), never read, and audited per tenant.
    assert sorted(p.name for p in mine.iterdir()) == ["sop-4.md"]
    assert not (inbox / linked.name).exists() and not os.path.lexists(inbox / linked.name)
    refused = sorted(p.name for p in (inbox / ".refused" / me.name).iterdir())
    assert len([n for n in refused if n.endswith(".reason.txt")]) == 5
    assert secret_file.read_text().strip() == jwt_secret and original.exists()
    with tenant_session(me.id) as s:
        audited = s.execute(text("SELECT resource_id, details->>'reason' FROM audit_events "
                                 "WHERE action = 'document.source_refused' ORDER BY resource_id")).all()
    assert {r[0].split("/")[-1] for r in audited} == {"key.txt", "recipe.md", "passwd.txt", "hard.txt", "sub"}
    with tenant_session(linked.id) as s:
        assert s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'document.source_refused'")
                         ).scalar() == 1

    assert all(r.success for r in pipeline.run())
    assert _documents(me) == {"sop-4.md": "indexed"}
    assert _documents(linked) == {}
    assert any("solvent S-4" in t for t in _search(client, me, "solvent S-4 die"))
    for query in (jwt_secret, "root:x:0:0 bin bash", OTHER_SECRET):
        hits = _search(client, me, query)
        assert not any(jwt_secret in t or "root:x:0" in t or "FR-77" in t for t in hits), (query, hits)
    # A second tick finds nothing new: the refused entries are gone from the inbox.
    assert "0 submitted" in pipeline.inbox() and "0 refused" in pipeline.inbox()


def test_inbox_refuses_a_linked_sidecar_and_its_file(pipeline, make_tenant):
    """A sidecar is read through the same checks; its file is refused with it (the sidecar held its
    classification and ACL: the file is never ingested with the defaults instead)."""
    settings = get_settings()
    pipeline.inbox()
    me = make_tenant("sidecar")
    folder = settings.inbox_dir / me.name
    folder.mkdir(parents=True)
    (folder / "spec.md").write_text("# Spec\n\nTorque 25 Nm.")
    os.symlink(settings.secrets_dir / "jwt_secret", folder / "spec.md.meta.json")
    msg = pipeline.inbox()
    assert "0 submitted" in msg and "2 refused" in msg and "sidecar (.meta.json) was refused" in msg, msg
    assert "spec.md.meta.json: symbolic link" in msg
    assert "0 submitted" in pipeline.inbox()
    assert _documents(me) == {} and list(folder.iterdir()) == []


def test_eap_ingest_folder_walk_refuses_links(client, pipeline, make_tenant, tmp_path, capsys):
    from eap.ingest import run_ingest

    settings = get_settings()
    me = make_tenant("clisec")
    secret_file = settings.secrets_dir / "jwt_secret"
    settings.jwt_signing_secret()
    original = _other_tenants_original(make_tenant)
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "ok.md").write_text(f"# OK\n\n{MY_TEXT}")
    os.symlink(secret_file, folder / "key.txt")
    os.symlink(original, folder / "recipe.md")
    os.symlink("/etc/passwd", folder / "passwd.txt")
    os.link(original, folder / "copy.md")  # hard link to the file store
    os.symlink(original.parent, folder / "store")  # a link to a file store folder
    assert run_ingest([str(folder)], me.name, "II", None, wait=False, timeout=None) == 1
    out = capsys.readouterr().out
    assert "1 submitted (0 unchanged), 5 refused" in out, out
    assert re.search(r"copy\.md: has \d hard links", out), out
    # A file named explicitly is resolved, but never from the platform's private folders.
    named = tmp_path / "named.md"
    os.symlink(original, named)
    assert run_ingest([str(named)], me.name, "II", None, wait=False, timeout=None) == 1
    assert "private platform folder" in capsys.readouterr().out
    with tenant_session(me.id) as s:
        assert s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'document.source_refused' "
                              "AND actor = 'cli'")).scalar() == 6
    assert all(r.success for r in pipeline.run())
    assert _documents(me) == {"ok.md": "indexed"}
    assert not any("FR-77" in t for t in _search(client, me, OTHER_SECRET))


def test_stage_products_and_originals_are_owner_only(pipeline, make_tenant):
    """Finding 11: stage files hold unsanitised text of Class IV documents; originals likewise."""
    settings = get_settings()
    me = make_tenant("perm")
    sub = submission.submit_document(me.id, filename="c4.md", stream=io.BytesIO(b"# C4\n\nRecipe: mix at 80 C."),
                                    classification="IV", acl_groups=["rnd"], actor="test")
    old = os.umask(0o022)  # a permissive umask, as a service manager might leave it
    try:
        assert all(r.success for r in pipeline.run())
    finally:
        os.umask(old)
    assert _documents(me) == {"c4.md": "awaiting_approval"}  # stage products stay for the steward
    stage_root = settings.pipeline_dir / str(sub.document_id)
    entries = [stage_root, *stage_root.rglob("*")]
    assert len(entries) > 5
    for p in [settings.pipeline_dir, *entries]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    blob = settings.file_store_dir / sub.content_hash[:2] / sub.content_hash
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    for d in (settings.file_store_dir, blob.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
