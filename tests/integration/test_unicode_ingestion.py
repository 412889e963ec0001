"""Issue 12 #8 through the real upload API, Dagster ingestion run, steward review, fine-tuning export and
the no-PII asset check: full-width `ＩＴＡＲ` raises the class (and so stays out of the export);
full-width `＠` and digits in a Class III document are replaced before anything is indexed; and the
check itself catches such PII if a chunk ever carries it."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dagster as dg
from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.models import Conversation, Message, Role
from core.security import mint_token
from core.settings import get_settings
from retrieval.checks import restricted_chunks_with_pii
from tests.builders import chunk_rows, document_row, finetune_export_config, index_document, upload_file

FW_ITAR = "\uff29\uff34\uff21\uff32"  # ＩＴＡＲ
FW_EMAIL = "ｊａｎａ．ｎｏｖａｋ＠ａｃｍｅ．ｃｚ"
FW_PHONE = "＋４２０ ６０１ １２３ ４５６"


def _h(t, user):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.operator,
                                                    subject=user)}


def _rated_answer_citing(client, t, user, chunk_id, doc_id, question):
    """A positively rated assistant answer citing `chunk_id`, stored as /v1/chat stores one."""
    with tenant_session(t.id) as s:
        conv = Conversation(id=uuid.uuid4(), tenant_id=t.id, user_subject=user, title="q")
        s.add(conv)
        s.flush()
        s.add(Message(tenant_id=t.id, conversation_id=conv.id, role="user", content=question,
                      created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
        mid = uuid.uuid4()
        s.add(Message(id=mid, tenant_id=t.id, conversation_id=conv.id, role="assistant",
                      content=f"The assembly is {FW_ITAR} controlled. [1]",
                      citations=[{"n": 1, "document_id": str(doc_id), "chunk_id": str(chunk_id), "score": 0.03,
                                  "title": "x", "page": 1, "section": None}]))
    r = client.post("/v1/feedback", json={"message_id": str(mid), "rating": "up"}, headers=_h(t, user))
    assert r.status_code == 201, r.text


def test_full_width_itar_raises_the_class_and_stays_out_of_the_finetune_export(client, dagster_env, make_tenant):
    import definitions
    from assets.evals import finetune_dataset

    _inst, run_pipeline, review = dagster_env
    t = make_tenant("uni-itar")
    body = f"Servo drive SD-9 datasheet\n\nThe SD-9 assembly is {FW_ITAR} controlled. Torque the mounts to 12 Nm.\n"
    up = upload_file(client, t, "sd9.txt", body.encode(), classification="I", acl_groups="export").json()
    assert run_pipeline()[0].success
    row = document_row(t.id, up["document_id"])
    assert row["classification"] == 4 and row["declared_classification"] == 1
    assert row["status"] == "awaiting_approval" and chunk_rows(t.id, up["document_id"]) == []
    # The steward releases it: it is indexed as Class IV, which the fine-tuning export never takes.
    assert review(up["document_id"], "approve").success
    chunks = chunk_rows(t.id, up["document_id"])
    assert chunks and all(c["classification"] == 4 for c in chunks)
    _rated_answer_citing(client, t, "u1", chunks[0]["id"], up["document_id"], "Is the SD-9 export controlled?")

    res = dg.materialize([finetune_dataset], resources=definitions.defs.resources,
                         run_config=finetune_export_config(client, t))
    assert res.success
    folder = get_settings().home / "datasets" / "finetune" / t.name
    assert (folder / "train.jsonl").read_text() == ""
    card = json.loads((folder / "data_card.json").read_text())
    assert (card["records"], card["candidates"], card["excluded_restricted"]) == (0, 1, 1)


def test_full_width_pii_in_a_class_iii_document_is_replaced(client, dagster_env, make_tenant):
    _inst, run_pipeline, review = dagster_env
    t = make_tenant("uni-pii")
    body = (f"# Recipe R-8\n\nQuestions to {FW_EMAIL}, phone {FW_PHONE}.\n\n"
            "Anneal the housings at 540 °C for 4 h.\n")
    up = upload_file(client, t, "r8.md", body.encode(), classification="III", acl_groups="metallurgy").json()
    results = run_pipeline()
    assert results[0].success
    assert review(up["document_id"], "approve").success
    joined = " ".join(c["text"] for c in chunk_rows(t.id, up["document_id"]))
    assert "[EMAIL]" in joined and "[PHONE]" in joined and "Anneal the housings at 540 °C" in joined
    assert "＠" not in joined and "６０１" not in joined and "ｎｏｖａｋ" not in joined
    scanned, leaks = restricted_chunks_with_pii()
    assert scanned >= 1 and not leaks


def test_no_pii_check_catches_a_full_width_address_left_in_a_restricted_chunk(make_tenant):
    """The check on a planted chunk (written straight into the index, past the sanitise stage)."""
    t = make_tenant("uni-check")
    doc_id = index_document(t, "planted", 3, ["qa"], f"Call {FW_PHONE} or write to {FW_EMAIL} about lot 7.")
    try:
        with tenant_session(t.id) as s:
            cid = str(s.execute(text("SELECT id FROM chunks WHERE document_id = :d"), {"d": str(doc_id)}).scalar_one())
        _scanned, leaks = restricted_chunks_with_pii()
        assert cid in leaks
    finally:  # never leave a leaking chunk behind for the other tests' asset checks
        with system_session() as s:
            s.execute(text("DELETE FROM chunk_terms WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id = :d)"),
                      {"d": str(doc_id)})
            s.execute(text("DELETE FROM chunks WHERE document_id = :d"), {"d": str(doc_id)})
            s.execute(text("DELETE FROM documents WHERE id = :d"), {"d": str(doc_id)})
