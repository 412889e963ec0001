"""Feedback → source boosts (real Dagster materialization and sensor) → retrieval ranking."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Message
from core.settings import get_settings
from retrieval.search import Caller, search
from tests.builders import answer_citing, bearer, finetune_export_config, index_document


def _materialize(tenant, kind="boosts"):
    """The refresh_source_boosts job's assets, for real: candidate version → gate check → promotion."""
    import definitions
    from assets.indexing import active_index, candidate_passes_golden_eval, index_candidate

    res = dg.materialize([index_candidate, candidate_passes_golden_eval, active_index],
                         resources=definitions.defs.resources,
                         run_config={"ops": {"index_candidate": {"config": {"kind": kind, "reason": "test",
                                                                            "tenants": [tenant.name]}}}})
    assert res.success
    return {k: v.value for k, v in res.asset_materializations_for_node("index_candidate")[0].metadata.items()}, \
        {k: v.value for k, v in res.asset_materializations_for_node("active_index")[0].metadata.items()}


def test_feedback_boosts_reorder_retrieval(client, make_tenant):
    t = make_tenant("fb")
    vec = np.zeros(384, dtype=np.float32)
    vec[3] = 1.0
    body = "Hydraulic oil HLP 46 is used in the HP-400 press."
    a = index_document(t, "manual-a", 2, [], body, vector=vec)
    b = index_document(t, "manual-b", 2, [], body, vector=vec)
    with tenant_session(t.id) as s:
        chunk = dict(s.execute(text("SELECT document_id, id FROM chunks")).all())
        before = [h.title for h in search(s, Caller("operator"), "hydraulic oil HLP 46", k=2).hits]
    # Users like manual-b's answers and dislike manual-a's.
    for i in range(3):
        mid_b = answer_citing(t, f"u{i}", b, chunk[b])
        mid_a = answer_citing(t, f"u{i}", a, chunk[a])
        assert client.post("/v1/feedback", json={"message_id": str(mid_b), "rating": "up"},
                           headers=bearer(t, f"u{i}")).status_code == 201
        assert client.post("/v1/feedback", json={"message_id": str(mid_a), "rating": 1, "comment": "wrong SOP"},
                           headers=bearer(t, f"u{i}")).status_code == 201
    built, promoted = _materialize(t)
    # A boosts refresh is a new index version sharing the serving chunks; ungated (no golden set
    # for this tenant), it is promoted, and answers now record version 2.
    assert built["candidates"][t.name]["boosts"]["chunks"] == 2 and built["candidates"][t.name]["generation"] == 1
    assert promoted["promoted"][t.name] == {"version": 2, "from_version": 1, "generation": 1}
    with tenant_session(t.id) as s:
        boosts = dict(s.execute(text("SELECT document_id, boost FROM source_boosts WHERE kind = 'document' "
                                     "AND index_version = 2")).all())
        res = search(s, Caller("operator"), "hydraulic oil HLP 46", k=2)
        evaluation = s.execute(text("SELECT evaluation FROM index_versions WHERE version = 2")).scalar()
    assert res.index_version == 2 and evaluation["gated"] is False and evaluation["passed"] is True
    assert 0.5 <= boosts[a] < 1.0 < boosts[b] <= 2.0
    assert boosts[b] == 1 + 3 / (3 + 3)  # three unit votes against three pseudo-votes: smoothed, not 2x
    assert [h.title for h in res.hits] == ["manual-b", "manual-a"] and sorted(before) == ["manual-a", "manual-b"]
    assert any("feedback boosts applied" in n for n in res.notes)
    # Nothing new: a second refresh builds no version.
    built, promoted = _materialize(t)
    assert built["skipped"] == {t.name: "boosts unchanged"} and promoted["promoted"] == {}


def test_feedback_api_rules(client, make_tenant):
    t = make_tenant("fbapi")
    vec = np.zeros(384, dtype=np.float32)
    vec[4] = 1.0
    d = index_document(t, "doc", 2, [], "Torque M8 bolts to 25 Nm.", vector=vec)
    with tenant_session(t.id) as s:
        cid = s.execute(text("SELECT id FROM chunks")).scalar()
    mid = answer_citing(t, "olga", d, cid)
    assert client.post("/v1/feedback", json={"message_id": str(mid), "rating": "up"},
                       headers=bearer(t, "mallory")).status_code == 404  # not your answer
    for bad in ({"message_id": str(mid), "rating": 6}, {"message_id": str(mid), "rating": "meh"},
                {"message_id": "x", "rating": "up"}, {"rating": "up"}):
        assert client.post("/v1/feedback", json=bad, headers=bearer(t, "olga")).status_code == 422
    assert client.post("/v1/feedback", json={"message_id": str(mid), "rating": "up"},
                       headers=bearer(t, "olga")).json()["value"] == 1.0
    second = client.post("/v1/feedback", json={"message_id": str(mid), "rating": 2}, headers=bearer(t, "olga")).json()
    assert second["value"] == -0.5
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*), max(value) FROM feedback")).one() == (1, -0.5)  # replaced


def test_feedback_sensor_triggers_on_enough_new_feedback(client, make_tenant, monkeypatch):
    import definitions
    from evals.feedback import feedback_count
    from sensors.indexing import feedback_arrivals

    monkeypatch.setenv("EAP_FEEDBACK_TRIGGER", "2")
    get_settings.cache_clear()
    try:
        n0, _ = feedback_count()
        ctx = dg.build_sensor_context(cursor=str(n0), resources=definitions.defs.resources)
        assert isinstance(feedback_arrivals(ctx), dg.SkipReason)
        t = make_tenant("fbs")
        vec = np.zeros(384, dtype=np.float32)
        vec[5] = 1.0
        d = index_document(t, "doc", 2, [], "Coolant concentration 6 percent.", vector=vec)
        with tenant_session(t.id) as s:
            cid = s.execute(text("SELECT id FROM chunks")).scalar()
        for user in ("a", "b"):
            mid = answer_citing(t, user, d, cid)
            client.post("/v1/feedback", json={"message_id": str(mid), "rating": 5}, headers=bearer(t, user))
        ctx = dg.build_sensor_context(cursor=str(n0), resources=definitions.defs.resources)
        req = feedback_arrivals(ctx)
        assert isinstance(req, dg.RunRequest) and req.run_key.startswith(f"boosts:{n0 + 2}:")
        assert isinstance(feedback_arrivals(dg.build_sensor_context(
            cursor=ctx.cursor, resources=definitions.defs.resources)), dg.SkipReason)
    finally:
        monkeypatch.delenv("EAP_FEEDBACK_TRIGGER")
        get_settings.cache_clear()


def test_finetune_dataset_is_scrubbed_filtered_and_deduplicated(client, make_tenant):
    import json

    import definitions
    from assets.evals import finetune_dataset

    t = make_tenant("ft")
    vec = np.zeros(384, dtype=np.float32)
    vec[6] = 1.0
    open_doc = index_document(t, "sop", 2, [], "Grease the ram bearings every 500 hours.", vector=vec)
    secret_doc = index_document(t, "recipe", 3, ["qa"], "Anneal at 540 C for 4 hours.", vector=vec)
    with tenant_session(t.id) as s:
        chunk = dict(s.execute(text("SELECT document_id, id FROM chunks")).all())

    def qa(user, doc, question, rating):
        mid = answer_citing(t, user, doc, chunk[doc])
        with tenant_session(t.id) as s:
            conv = s.execute(text("SELECT conversation_id FROM messages WHERE id = :m"), {"m": mid}).scalar()
            s.add(Message(tenant_id=t.id, conversation_id=conv, role="user", content=question,
                          created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
        assert client.post("/v1/feedback", json={"message_id": str(mid), "rating": rating},
                           headers=bearer(t, user)).status_code == 201

    qa("u1", open_doc, "Ask jana.novak@acme.cz: how often are bearings greased?", "up")
    qa("u2", open_doc, "Ask jana.novak@acme.cz: how often are bearings greased?", 5)  # duplicate after scrubbing
    qa("u3", secret_doc, "What is the anneal recipe?", "up")  # Class III: excluded
    qa("u4", open_doc, "Bad answer?", "down")  # negative: not a candidate

    # The export is approved through the platform API by a tenant admin (tests/builders.py).
    res = dg.materialize([finetune_dataset], resources=definitions.defs.resources,
                         run_config=finetune_export_config(client, t))
    assert res.success
    folder = get_settings().home / "datasets" / "finetune" / t.name
    lines = (folder / "train.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    assert rec["messages"][1]["content"] == "Ask [EMAIL]: how often are bearings greased?"
    card = json.loads((folder / "data_card.json").read_text())
    assert (card["records"], card["candidates"], card["excluded_restricted"], card["duplicates"]) == (1, 3, 1, 1)
    assert card["pii_replaced"] == 1 and "Class III/IV" in card["filters"]["classification"]
