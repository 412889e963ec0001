"""Golden datasets per tenant (issue 19, item 8): uploaded by a tenant admin through the API or the inbox
folder, validated and versioned; the nightly evaluation and the promotion gate run per tenant on its own
set; a tenant without one is shown as such, never as evaluated."""

import json

import dagster as dg
import numpy as np
from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.enums import Role
from tests.builders import bearer, index_document

SET = {"version": "press-line-2026.1", "description": "press line 3 questions",
       "questions": [
           {"id": "p1", "question": "What torque do the ram guide bolts need?", "expected_facts": ["85 Nm"],
            "expected_sources": ["ram-guide"], "specialist": "maintenance_advisor", "tags": ["torque"]},
           {"id": "p2", "question": "How often is the ram guide greased?", "expected_facts": ["every shift"],
            "expected_sources": ["ram-guide"], "specialist": "maintenance_advisor"},
       ]}


def _admin(t):
    return bearer(t, "ada.admin", role=Role.admin)


def _vec(i: int) -> np.ndarray:
    v = np.zeros(384, dtype=np.float32)
    v[i] = 1.0
    return v


def test_upload_validates_versions_and_is_tenant_scoped(client, make_tenant):
    a, b = make_tenant("gold-a"), make_tenant("gold-b")
    assert client.get("/v1/evals/golden", headers=_admin(a)).json()["state"] == "none"

    r = client.post("/v1/evals/golden", json=SET, headers=_admin(a))
    assert r.status_code == 201, r.text
    assert r.json() == {"version": 1, "label": "press-line-2026.1", "questions": 2, "unchanged": False}
    assert client.post("/v1/evals/golden", json=SET, headers=_admin(a)).json()["unchanged"] is True
    changed = {**SET, "version": "press-line-2026.2", "questions": SET["questions"][:1]}
    assert client.post("/v1/evals/golden", json=changed, headers=_admin(a)).json()["version"] == 2

    state = client.get("/v1/evals/golden", headers=bearer(a, "otto", role=Role.operator)).json()
    assert state["state"] == "tenant" and state["current"]["label"] == "press-line-2026.2"
    assert [v["version"] for v in state["versions"]] == [2, 1] and state["versions"][0]["uploaded_by"] == "ada.admin"
    # Another tenant sees none of it.
    other = client.get("/v1/evals/golden", headers=_admin(b)).json()
    assert (other["state"], other["current"], other["versions"]) == ("none", None, [])
    assert "POST /v1/evals/golden" in other["note"]

    # Bad input: a 422 with the problems, nothing stored.
    bad = [
        {"questions": []},
        {"questions": [{**SET["questions"][0], "specialist": "astrologer"}]},
        {"questions": [SET["questions"][0], SET["questions"][0]]},
        {"questions": [{**SET["questions"][0], "expected_sources": []}]},
        {"questions": "p1"},
    ]
    for body in bad:
        r = client.post("/v1/evals/golden", json=body, headers=_admin(a))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_golden_set"
    r = client.post("/v1/evals/golden", content=b"[1, 2]", headers={**_admin(a), "Content-Type": "application/json"})
    assert r.status_code == 422
    # Only admins upload.
    assert client.post("/v1/evals/golden", json=SET, headers=bearer(a, "otto", role=Role.operator)).status_code == 403
    with tenant_session(a.id) as s:
        assert s.execute(text("SELECT count(*) FROM golden_datasets")).scalar() == 2
        actions = s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'golden_set.upload'")).scalar()
    assert actions == 2


def test_each_tenant_is_evaluated_and_gated_on_its_own_set(client, make_tenant):
    import definitions
    from assets.evals import golden_eval
    from assets.indexing import active_index, candidate_passes_golden_eval, index_candidate

    own, bare = make_tenant("gold-own"), make_tenant("gold-bare")
    for t in (own, bare):
        index_document(t, "ram-guide", 1, [], "Ram guide bolts: torque to 85 Nm. Grease the ram guide every shift.",
                       vector=_vec(5))
    assert client.post("/v1/evals/golden", json=SET, headers=_admin(own)).status_code == 201

    res = dg.materialize([golden_eval], resources=definitions.defs.resources)
    meta = res.asset_materializations_for_node("golden_eval")[0].metadata
    assert f"{own.name}/overall" in meta and f"{bare.name}/overall" not in meta
    assert bare.name in meta["tenants without a golden set"].value
    with tenant_session(own.id) as s:
        run = s.execute(text("SELECT dataset_version, overall FROM eval_runs ORDER BY created_at DESC")).first()
    assert run.dataset_version.startswith("press-line-2026.1") and run.overall["questions"] == 2
    with tenant_session(bare.id) as s:
        assert s.execute(text("SELECT count(*) FROM eval_runs")).scalar() == 0

    # A new index version (candidate) for both: the one with a set is gated on it; the other is marked,
    # not presented as evaluated.
    from retrieval import builds

    for t in (own, bare):
        builds.finish(builds.start(t.id, "boosts", "golden test"), {})
    res = dg.materialize([index_candidate, candidate_passes_golden_eval, active_index],
                         resources=definitions.defs.resources,
                         run_config={"ops": {"index_candidate": {"config": {"kind": "boosts", "reason": "golden test",
                                                                             "tenants": ["none-of-these"]}}}})
    with system_session() as s:
        rows = dict(s.execute(text("SELECT t.name, v.evaluation FROM index_versions v JOIN tenants t ON t.id = "
                                   "v.tenant_id WHERE t.id IN (:a, :b) AND v.evaluation <> '{}'::jsonb"),
                              {"a": own.id, "b": bare.id}).all())
    assert rows[own.name]["gated"] is True
    assert rows[bare.name]["gated"] is False and rows[bare.name]["state"] == "no_golden_set"
    assert "NO GOLDEN SET" in rows[bare.name]["note"]
    check = res.get_asset_check_evaluations()[0]
    assert check.metadata["verdicts"].value[bare.name]["state"] == "no_golden_set"


def test_inbox_golden_folder_uploads_a_set(make_tenant):
    import shutil

    from core.settings import get_settings
    from tests.integration.ingest_harness import Pipeline

    t = make_tenant("gold-inbox")
    folder = get_settings().inbox_dir / t.name / "golden"
    folder.mkdir(parents=True)
    try:
        (folder / "press.json").write_text(json.dumps(SET))
        (folder / "broken.json").write_text('{"questions": [{"id": "x"}]}')
        msg = Pipeline().inbox()
    finally:
        shutil.rmtree(folder.parent)
    assert "1 golden datasets" in msg and "broken.json" in msg
    with tenant_session(t.id) as s:
        rows = s.execute(text("SELECT version, label, source, questions FROM golden_datasets")).all()
        docs = s.execute(text("SELECT count(*) FROM documents")).scalar()
    assert [(r.version, r.label, r.questions) for r in rows] == [(1, "press-line-2026.1", 2)]
    assert rows[0].source.endswith("golden/press.json") and docs == 0
