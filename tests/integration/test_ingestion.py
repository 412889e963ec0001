"""Ingestion end to end: the real upload API, the real Dagster sensor and jobs (the same ones the
daemon and the Dagster UI launch), the real PostgreSQL + pgvector."""

from __future__ import annotations

import io
import json
import uuid

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.models import Role
from core.settings import get_settings
from tests.builders import (
    chunk_rows,
    document_row,
    docx_bytes,
    text_image,
    text_pdf,
    upload_file,
    upload_headers,
)


def _scanned_pdf(lines):
    buf = io.BytesIO()
    Image.open(io.BytesIO(text_image(lines))).save(buf, format="PDF")
    return buf.getvalue()


def test_every_supported_type_is_indexed_in_one_batched_run(client, dagster_env, make_tenant):
    inst, run_pipeline, _ = dagster_env
    t = make_tenant("ingest")
    files = {
        "notes.txt": b"MAINTENANCE NOTES\n\nCheck hydraulic oil level daily on press P3-02.\n",
        "sop.md": b"# SOP-9 Die change\n\n## Steps\n\n1. Stop the press.\n2. Lock the main disconnect.\n",
        "manual.html": b"<h1>Manual</h1><h2>Oil</h2><p>Use HLP 46 hydraulic oil only.</p>",
        "manual.docx": docx_bytes("Manual M-2", [("1 Bearings", ["Grease ram bearings every 500 hours."])]),
        "report.pdf": text_pdf([["Quality report QR-5", "Porosity defects fell."], ["Gas flow must be 15 l/min."]]),
        "scan.pdf": _scanned_pdf(["Inspection criteria IC-9", "Torque for M8 bolts is 25 Nm."]),
        "photo.png": text_image(["Label: coolant concentration 6 percent"]),
    }
    ids = {}
    for name, data in files.items():
        r = upload_file(client, t, name, data)
        assert r.status_code == 202, (name, r.text)
        assert r.json()["status"] == "queued"
        ids[name] = r.json()["document_id"]

    results = run_pipeline()
    assert len(results) == 1 and results[0].success  # 7 uploads, one run
    mats = results[0].get_asset_materialization_events()
    assert {str(m.partition) for m in mats} >= set(ids.values())
    assert {m.asset_key.to_user_string() for m in mats} == {
        "document_raw", "document_parsed", "document_classified", "document_sanitised", "document_chunks",
        "document_embeddings", "search_index"}
    checks = {c.check_name: c.passed for c in results[0].get_asset_check_evaluations()}
    assert checks == {"chunks_have_text": True, "embedding_dimension": True, "no_orphan_chunks": True,
                      "no_pii_in_restricted_chunks": True}
    assert set(inst.get_dynamic_partitions("documents")) >= set(ids.values())

    for name, doc_id in ids.items():
        d = document_row(t.id, doc_id)
        assert d["status"] == "indexed", (name, d["status"], d["status_reason"])
        chunks = chunk_rows(t.id, doc_id)
        assert d["chunk_count"] == len(chunks) > 0
        for c in chunks:
            assert c["dims"] == c["embedding_dim"] == 384
            assert c["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
            assert c["lexical_len"] > 0 and c["index_version"] == 1
    texts = {n: " ".join(c["text"] for c in chunk_rows(t.id, i)) for n, i in ids.items()}
    assert "Torque for M8 bolts is 25 Nm" in texts["scan.pdf"]  # only OCR can read this
    assert "coolant concentration 6 percent" in texts["photo.png"]
    assert "Grease ram bearings every 500 hours" in texts["manual.docx"]
    pdf_chunks = chunk_rows(t.id, ids["report.pdf"])
    assert pdf_chunks[0]["page"] == 1
    assert chunk_rows(t.id, ids["sop.md"])[0]["section"].startswith("SOP-9 Die change")
    assert document_row(t.id, ids["scan.pdf"])["metadata"]["ocr_pages"] == [1]

    # The vectors are real: the nearest chunk to a question is the one that answers it.
    from core.embedding import get_embedder

    q = get_embedder().embed(["what torque for M8 bolts?"])[0]
    with tenant_session(t.id) as s:
        nearest = s.execute(
            text("SELECT document_id FROM chunks WHERE embedding_dim = 384 "
                 "ORDER BY embedding::vector(384) <=> CAST(:q AS vector(384)) LIMIT 1"),
            {"q": json.dumps(np.asarray(q).tolist())}).scalar()
        terms = s.execute(text("SELECT count(*) FROM chunk_terms ct JOIN chunks c ON c.id = ct.chunk_id "
                               "WHERE c.document_id = :d AND ct.term = 'torqu'"), {"d": ids["scan.pdf"]}).scalar()
    assert str(nearest) == ids["scan.pdf"]
    assert terms == 1  # BM25 postings, stemmed

    # Status API shows the result.
    r = client.get(f"/v1/documents/{ids['scan.pdf']}", headers=upload_headers(t))
    assert r.status_code == 200 and r.json()["status"] == "indexed" and r.json()["chunk_count"] >= 1


def test_class_iii_waits_for_steward_and_rejection_never_indexes(client, dagster_env, make_tenant):
    inst, run_pipeline, review = dagster_env
    t = make_tenant("gate")
    body = b"# Recipe R-7\n\nPrepared by: Jana Novakova, phone +420 601 123 456.\n\nAnneal at 540 C for 4 h.\n"
    ok = upload_file(client, t, "recipe.md", body, classification="III", acl_groups="metallurgy").json()
    no = upload_file(client, t, "other.md", b"# Other\n\nSecret alloy mix 7.", classification="III",
                 acl_groups="metallurgy").json()
    assert run_pipeline()[0].success
    for d in (ok, no):
        row = document_row(t.id, d["document_id"])
        assert (row["status"], row["review_status"]) == ("awaiting_approval", "pending")
        assert chunk_rows(t.id, d["document_id"]) == []
        assert d["document_id"] in inst.get_dynamic_partitions("documents")

    # Incomplete review is refused (the UI run fails, nothing changes).
    bad = review(ok["document_id"], "approve", steward="", raise_on_error=False)
    assert not bad.success
    assert document_row(t.id, ok["document_id"])["status"] == "awaiting_approval"

    assert review(ok["document_id"], "approve").success
    row = document_row(t.id, ok["document_id"])
    assert (row["status"], row["review_status"], row["reviewed_by"]) == ("indexed", "approved", "sam.steward")
    chunks = chunk_rows(t.id, ok["document_id"])
    assert chunks and all(c["classification"] == 3 and c["acl_groups"] == ["metallurgy"] for c in chunks)
    joined = " ".join(c["text"] for c in chunks)
    assert "Jana Novakova" not in joined and "601 123 456" not in joined
    assert "[PERSON]" in joined and "[PHONE]" in joined and "Anneal at 540 C" in joined

    assert review(no["document_id"], "reject", reason="contains customer formula").success
    row = document_row(t.id, no["document_id"])
    assert (row["status"], row["review_status"]) == ("rejected", "rejected")
    assert chunk_rows(t.id, no["document_id"]) == []
    assert run_pipeline() == []  # nothing re-queued

    with tenant_session(t.id) as s:
        events = s.execute(text("SELECT action, actor, details FROM audit_events WHERE resource_id IN (:a, :b) "
                                "AND action LIKE 'document.review.%' ORDER BY seq"),
                           {"a": ok["document_id"], "b": no["document_id"]}).all()
    assert [(e.action, e.actor) for e in events] == [("document.review.approved", "sam.steward"),
                                                     ("document.review.rejected", "sam.steward")]
    assert events[1].details["reason"] == "contains customer formula"


def _store_files() -> int:
    root = get_settings().file_store_dir
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


@pytest.mark.parametrize(
    "name,data,form,role,status,code",
    [
        ("empty.txt", b"", {}, Role.operator, 422, "empty_file"),
        ("empty.pdf", b"", {}, Role.operator, 422, "empty_file"),
        ("text.pdf", b"this is not a pdf", {}, Role.operator, 415, "content_type_mismatch"),
        ("tool.exe", b"MZ\x90\x00binary", {}, Role.operator, 415, "unsupported_type"),
        ("a.txt", b"hello", {"classification": "V"}, Role.operator, 422, "invalid_classification"),
        ("a.txt", b"hello", {"classification": "III"}, Role.operator, 422, "acl_required"),
        ("a.txt", b"hello", {"acl_groups": "bad group!"}, Role.operator, 422, "invalid_acl"),
        ("a.txt", b"hello", {}, Role.viewer, 403, "insufficient_role"),
    ],
)
def test_bad_uploads_are_clear_4xx_and_write_nothing(client, make_tenant, name, data, form, role, status, code):
    t = make_tenant("bad")
    before = _store_files()
    r = upload_file(client, t, name, data, role=role, **form)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert _store_files() == before
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM documents")).scalar() == 0


def test_oversized_upload_is_413(client, make_tenant, monkeypatch):
    t = make_tenant("big")
    monkeypatch.setenv("EAP_MAX_UPLOAD_BYTES", "1000")
    get_settings.cache_clear()
    try:
        r = upload_file(client, t, "big.txt", b"x" * 5000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    finally:
        monkeypatch.delenv("EAP_MAX_UPLOAD_BYTES")
        get_settings.cache_clear()
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM documents")).scalar() == 0


def test_corrupt_pdf_fails_alone_and_reupload_is_idempotent_and_atomic(client, dagster_env, make_tenant):
    _, run_pipeline, _ = dagster_env
    t = make_tenant("idem")
    good = upload_file(client, t, "sop.md", b"# SOP-1\n\nWear gloves near the press.").json()
    broken = upload_file(client, t, "broken.pdf", b"%PDF-1.4\n1 0 obj << garbage").json()
    first = run_pipeline()
    assert first[0].success
    # What happened to each document is on its own partition's materialization (the UI shows it per document);
    # the metadata every partition of the run shares holds counts only, never a map over the run's documents.
    meta = {(m.asset_key.to_user_string(), str(m.partition)): m.materialization.metadata
            for m in first[0].get_asset_materialization_events()}
    assert meta[("document_parsed", broken["document_id"])]["failure"].value == "parse: ParseError"
    assert "failure" not in meta[("document_parsed", good["document_id"])]
    assert meta[("search_index", good["document_id"])]["outcome"].value == "indexed"
    assert meta[("search_index", broken["document_id"])]["outcome"].value == "skipped (failed)"
    assert meta[("document_parsed", good["document_id"])]["failed"].value == 1
    assert not any(isinstance(v.value, dict) and broken["document_id"] in v.value
                   for m in meta.values() for v in m.values())
    assert document_row(t.id, good["document_id"])["status"] == "indexed"
    bad_row = document_row(t.id, broken["document_id"])
    assert bad_row["status"] == "failed" and "corrupt PDF" in bad_row["status_reason"]
    r = client.get(f"/v1/documents/{broken['document_id']}", headers=upload_headers(t))
    assert r.json()["status"] == "failed" and r.json()["status_reason"].startswith("parse: corrupt PDF")

    # Unchanged re-upload: 200, nothing queued, nothing run.
    again = upload_file(client, t, "sop.md", b"# SOP-1\n\nWear gloves near the press.")
    assert again.status_code == 200 and again.json()["unchanged"] is True
    assert run_pipeline() == []
    old_ids = {c["id"] for c in chunk_rows(t.id, good["document_id"])}

    # A changed version that fails to parse leaves the previous chunks serving.
    changed_bad = upload_file(client, t, "sop.md", b"\x00\x01binary now")
    assert changed_bad.status_code == 415  # refused up front: nothing changes
    assert {c["id"] for c in chunk_rows(t.id, good["document_id"])} == old_ids

    # A changed version replaces the chunks atomically, with a new index version.
    changed = upload_file(client, t, "sop.md", b"# SOP-1 rev B\n\nWear cut-resistant gloves near the press.")
    assert changed.status_code == 202 and changed.json()["document_id"] == good["document_id"]
    assert {c["id"] for c in chunk_rows(t.id, good["document_id"])} == old_ids  # old serves until indexed
    assert run_pipeline()[0].success
    new = chunk_rows(t.id, good["document_id"])
    assert {c["id"] for c in new}.isdisjoint(old_ids)
    assert "cut-resistant" in " ".join(c["text"] for c in new) and new[0]["index_version"] == 2


def test_delete_removes_from_index_and_other_tenant_cannot_see(client, dagster_env, make_tenant):
    _, run_pipeline, _ = dagster_env
    a, b = make_tenant("a"), make_tenant("b")
    d = upload_file(client, a, "x.md", b"# X\n\nPress P1 cycle time is 12 s.").json()
    assert run_pipeline()[0].success
    assert client.get(f"/v1/documents/{d['document_id']}", headers=upload_headers(b)).status_code == 404
    assert client.delete(f"/v1/documents/{d['document_id']}", headers=upload_headers(b)).status_code == 404
    assert client.get("/v1/documents", headers=upload_headers(b)).json()["total"] == 0
    assert chunk_rows(a.id, d["document_id"])
    assert client.delete(f"/v1/documents/{d['document_id']}", headers=upload_headers(a)).status_code == 204
    assert chunk_rows(a.id, d["document_id"]) == []
    assert client.get(f"/v1/documents/{d['document_id']}", headers=upload_headers(a)).status_code == 404
    with system_session() as s:
        assert s.execute(text("SELECT count(*) FROM chunks WHERE document_id = :d"),
                         {"d": d["document_id"]}).scalar() == 0


def test_viewer_does_not_see_class_iii_metadata(client, dagster_env, make_tenant):
    t = make_tenant("vis")
    d = upload_file(client, t, "c3.md", b"# C3\n\nSecret.", classification="III", acl_groups="qa").json()
    assert client.get(f"/v1/documents/{d['document_id']}", headers=upload_headers(t, Role.viewer)).status_code == 404
    assert client.get(f"/v1/documents/{d['document_id']}",
                      headers=upload_headers(t, Role.operator, groups=("maint",))).status_code == 404
    assert client.get(f"/v1/documents/{d['document_id']}", headers=upload_headers(t, Role.operator)).status_code == 200


def test_inbox_sensor_submits_through_the_same_path(dagster_env, make_tenant):
    inst, run_pipeline, _ = dagster_env
    import definitions
    from sensors.ingestion import inbox

    t = make_tenant("inbox")
    folder = get_settings().inbox_dir / t.name / "sops"
    folder.mkdir(parents=True)
    (folder / "sop-3.md").write_text("# SOP-3\n\nClean the die with solvent S-4.")
    (folder / "secret.md").write_text("# Formula\n\nMix A and B.")
    (folder / "secret.md.meta.json").write_text(json.dumps({"classification": "III", "acl_groups": ["rnd"]}))
    (folder / "junk.exe").write_bytes(b"MZ")
    ctx = dg.build_sensor_context(instance=inst, resources=definitions.defs.resources)
    msg = inbox(ctx).skip_message
    assert "2 submitted" in msg and "1 refused" in msg and "junk.exe" in msg
    ctx2 = dg.build_sensor_context(instance=inst, cursor=ctx.cursor, resources=definitions.defs.resources)
    assert "0 submitted" in inbox(ctx2).skip_message
    with tenant_session(t.id) as s:
        rows = {r.filename: r for r in s.execute(text("SELECT filename, source, declared_classification, acl_groups "
                                                      "FROM documents")).all()}
    assert set(rows) == {"sop-3.md", "secret.md"}
    assert rows["secret.md"].declared_classification == 3 and rows["secret.md"].acl_groups == ["rnd"]
    assert rows["sop-3.md"].source == "inbox"
    assert all(r.success for r in run_pipeline())


def test_unknown_document_id_is_404_not_500(client, make_tenant):
    t = make_tenant("x")
    assert client.get(f"/v1/documents/{uuid.uuid4()}", headers=upload_headers(t)).status_code == 404
    assert client.get("/v1/documents/not-a-uuid", headers=upload_headers(t)).status_code == 422


def test_changed_version_failing_in_the_pipeline_leaves_previous_chunks_serving(client, dagster_env, make_tenant):
    _, run_pipeline, _ = dagster_env
    t = make_tenant("keep")
    v1 = upload_file(client, t, "spec.pdf", text_pdf([["Spec S-1", "Hardness 58 HRC after tempering."]])).json()
    assert run_pipeline()[0].success
    before = chunk_rows(t.id, v1["document_id"])
    assert before
    v2 = upload_file(client, t, "spec.pdf", b"%PDF-1.7\n% truncated upload, no objects").json()
    assert v2["document_id"] == v1["document_id"] and v2["status"] == "queued"
    assert run_pipeline()[0].success  # the run succeeds; the document fails alone
    row = document_row(t.id, v1["document_id"])
    assert row["status"] == "failed" and "corrupt PDF" in row["status_reason"]
    assert chunk_rows(t.id, v1["document_id"]) == before  # last good version keeps serving
    assert row["indexed_hash"] != row["content_hash"]


def test_eap_ingest_waits_until_the_pipeline_finishes(dagster_env, make_tenant, tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    _, run_pipeline, _ = dagster_env
    t = make_tenant("cli")
    (tmp_path / "a.md").write_text("# A\n\nConveyor C-2 speed is 0.5 m/s.")
    (tmp_path / "b.txt").write_text("Coolant must be changed monthly.")
    (tmp_path / "skip.exe").write_bytes(b"MZ")  # not a supported type: not collected from a folder
    eap = str(Path(sys.executable).parent / "eap")
    proc = subprocess.Popen([eap, "ingest", str(tmp_path), "--tenant", t.name, "--timeout", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 60
    ran = []
    while time.monotonic() < deadline and not ran:
        ran = run_pipeline()
        time.sleep(0.5)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert "2 submitted (0 unchanged), 0 refused" in out
    assert "2/2" in out and "indexed 2" in out
    with tenant_session(t.id) as s:
        n = s.execute(text("SELECT count(*) FROM documents WHERE status = 'indexed' AND source = 'cli'")).scalar()
    assert n == 2


def test_litellm_embedding_seam_against_an_openai_compatible_server():
    """The alternative embedder speaks the OpenAI embeddings API through LiteLLM (here to a
    loopback server standing in for Ollama/vLLM)."""
    from core.embedding import LiteLLMEmbedder
    from tests.builders import LoopbackEmbeddings

    with LoopbackEmbeddings(lambda s: [float(len(s)), 1.0, 0.0, 2.0]) as server:
        emb = LiteLLMEmbedder("openai/nomic-embed-text", server.base, dim=4)
        out = emb.embed(["abc", "defgh"])
    calls = server.calls
    assert calls == [("/v1/embeddings", "nomic-embed-text", 2)]
    assert out.shape == (2, 4)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    wrong = LiteLLMEmbedder("openai/x", "http://127.0.0.1:9/v1", dim=4)
    from core.embedding import EmbeddingError

    with pytest.raises(EmbeddingError):
        wrong.embed(["a"])
