"""Eval-gated index promotion, for real: the rebuild_search_index assets (candidate → blocking golden
eval check → pointer flip) materialised over the ingested sample documents; answers through /v1/chat
record the index version they used."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import LoopbackEmbeddings

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "How often should the ram guide bearings of the HP-400 press be greased?"


@pytest.fixture(scope="module")
def tenant(platform_db):
    from benchmarks.common import ingest_in_process
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"promo-{uuid.uuid4().hex[:8]}")
    ingest_in_process(t.id, sorted((ROOT / "samples").glob("*.*")), ROOT)
    return t


@pytest.fixture
def gated(monkeypatch, tenant):
    monkeypatch.setenv("EAP_EVAL_TENANTS", tenant.name)
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("EAP_EVAL_TENANTS")
    get_settings.cache_clear()


def _rebuild(tenant, reason):
    import definitions
    from assets.indexing import active_index, candidate_passes_golden_eval, index_candidate

    return dg.materialize(
        [index_candidate, candidate_passes_golden_eval, active_index], raise_on_error=False,
        resources=definitions.defs.resources,
        run_config={"ops": {"index_candidate": {"config": {"kind": "rebuild", "reason": reason,
                                                           "tenants": [tenant.name]}}}})


def _ask(client, tenant) -> dict:
    h = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                 role=Role.operator, subject="maint-lead")}
    r = client.post("/v1/chat", json={"message": QUESTION}, headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def _versions(tenant) -> dict[int, tuple]:
    with tenant_session(tenant.id) as s:
        return {r[0]: (r[1], r[2]) for r in s.execute(text(
            "SELECT version, status, chunk_generation FROM index_versions ORDER BY version")).all()}


def _generations(tenant) -> dict[int, int]:
    with tenant_session(tenant.id) as s:
        return dict(s.execute(text("SELECT generation, count(*) FROM chunks GROUP BY generation")).all())


def _broken_chunker(elements, doc_title=None, config=None):
    """A planted regression: every chunk keeps only the first three words of its element."""
    from ingestion.chunking import chunk_elements

    chunks = chunk_elements(elements, doc_title, config)
    for c in chunks:
        c.text = " ".join(c.text.split()[:3])
    return chunks


def test_regression_blocks_promotion_and_the_old_index_keeps_answering(client, tenant, gated, monkeypatch):
    first = _ask(client, tenant)
    assert first["index_version"] == 1 and first["citations"]
    before_gens = _generations(tenant)
    assert set(before_gens) == {1}

    monkeypatch.setattr("retrieval.builds.chunk_elements", _broken_chunker)
    res = _rebuild(tenant, "chunker change")
    check = {c.check_name: c for c in res.get_asset_check_evaluations()}["candidate_passes_golden_eval"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    verdict = check.metadata["verdicts"].value[tenant.name]
    assert verdict["gated"] and verdict["regressions"], verdict
    assert verdict["candidate"]["facts"] < verdict["active"]["facts"]
    # Blocked: the promotion step did not run, the candidate is rejected and its chunks dropped.
    assert not res.asset_materializations_for_node("active_index")
    assert _versions(tenant) == {1: ("active", 1), 2: ("rejected", 2)}
    assert _generations(tenant) == before_gens
    with tenant_session(tenant.id) as s:
        err = s.execute(text("SELECT error FROM index_versions WHERE version = 2")).scalar()
    assert "golden evaluation regressed" in err

    # The old index keeps answering, the same way, and says so.
    again = _ask(client, tenant)
    assert again["index_version"] == 1
    assert [c["chunk_id"] for c in again["citations"]] == [c["chunk_id"] for c in first["citations"]]
    with tenant_session(tenant.id) as s:
        recorded = s.execute(text("SELECT index_version FROM agent_runs WHERE id = :i"),
                             {"i": again["trace_id"]}).scalar()
    assert recorded == 1


def test_a_rebuild_that_holds_up_is_promoted_atomically(client, tenant, gated, monkeypatch):
    monkeypatch.setenv("EAP_CHUNK_OVERLAP_TOKENS", "30")  # a chunking configuration change
    get_settings.cache_clear()
    res = _rebuild(tenant, "chunk overlap 30")
    assert res.success
    check = {c.check_name: c for c in res.get_asset_check_evaluations()}["candidate_passes_golden_eval"]
    verdict = check.metadata["verdicts"].value[tenant.name]
    assert check.passed and verdict["gated"] and not verdict["regressions"], verdict
    promoted = res.asset_materializations_for_node("active_index")[0].metadata["promoted"].value
    new = promoted[tenant.name]["version"]
    assert promoted[tenant.name]["from_version"] == 1
    versions = _versions(tenant)
    assert versions[1] == ("retired", 1) and versions[new][0] == "active"
    # The replaced generation stays for in-flight queries; the rejected one is gone.
    assert set(_generations(tenant)) == {1, versions[new][1]}
    with tenant_session(tenant.id) as s:
        cfg = s.execute(text("SELECT config FROM index_versions WHERE version = :v"), {"v": new}).scalar()
        audit = s.execute(text("SELECT details FROM audit_events WHERE action = 'index.version.promoted' "
                               "ORDER BY seq DESC LIMIT 1")).scalar()
    assert cfg["chunk_overlap_tokens"] == 30 and audit["from_version"] == 1

    answer = _ask(client, tenant)
    assert answer["index_version"] == new and answer["citations"]
    admin = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                     role=Role.admin, subject="it-admin")}
    listed = client.get("/v1/index/versions", headers=admin).json()
    assert [(v["version"], v["status"]) for v in listed][:3] == [(new, "active"), (2, "rejected"), (1, "retired")]
    assert listed[0]["evaluation"]["passed"] is True and listed[1]["evaluation"]["regressions"]
    op = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                  role=Role.operator, subject="op")}
    assert client.get("/v1/index/versions", headers=op).status_code == 403
    with tenant_session(tenant.id) as s:
        cited_gen = s.execute(text("SELECT generation FROM chunks WHERE id = :c"),
                              {"c": answer["citations"][0]["chunk_id"]}).scalar()
    assert cited_gen == versions[new][1]
    # Two generations hold the SOP now (the replaced one is kept): its steps still come once, in order.
    h = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=tenant.id, tenant=tenant.name,
                                                 role=Role.operator, subject="setter")}
    steps = client.post("/v1/chat", json={"message": "What are the steps to change the die on the HP-400?"},
                        headers=h).json()
    numbered = [ln.split(".", 1)[0] for ln in steps["answer"].splitlines() if ln[:1].isdigit()]
    assert numbered == [str(i) for i in range(1, 8)], steps["answer"]
    assert "Before you start: A die change is done only after lockout/tagout according to SOP-114" in steps["answer"]


def test_promotion_catches_up_with_documents_indexed_meanwhile(client, tenant, monkeypatch, tmp_path):
    """A document indexed after the candidate was built is in the promoted index too."""
    from benchmarks.common import ingest_in_process
    from retrieval import builds

    cand = builds.start(tenant.id, "rebuild", "catch-up test")
    builds.finish(cand, builds.build_generation(cand))
    late = tmp_path / "late-notice.md"
    late.write_text("# Notice N-77\n\nThe coolant of grinder G-12 is changed every 400 operating hours.\n")
    ingest_in_process(tenant.id, [late], tmp_path)
    builds.record_evaluation(tenant.id, cand.version, {"passed": True, "gated": False})
    assert builds.promote(tenant.id)["version"] == cand.version
    with tenant_session(tenant.id) as s:
        hit = s.execute(text("SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
                             "WHERE d.title = 'late-notice' AND c.generation = :g"), {"g": cand.generation}).scalar()
    assert hit >= 1
    answer = _ask(client, tenant)
    assert answer["index_version"] == cand.version


def _hash_vector(text_: str) -> list[float]:
    """A deliberately poor embedding model: a one-hot vector of the text's SHA-256 (deterministic, meaningless)."""
    import hashlib

    vec = [0.0] * 64
    vec[hashlib.sha256(text_.encode()).digest()[0] % 64] = 1.0
    return vec


def test_a_new_embedding_model_is_evaluated_with_its_own_query_embeddings_and_rejected_when_worse(
        client, tenant, gated, monkeypatch):
    """The candidate is built and *queried* with the new model (the gate's questions are embedded by
    it), the serving version keeps its own model; a worse model never serves."""
    import definitions
    from assets.indexing import active_index, candidate_passes_golden_eval, index_candidate

    server = LoopbackEmbeddings(_hash_vector)
    monkeypatch.setenv("EAP_EMBEDDING_API_BASE", server.base)
    get_settings.cache_clear()
    try:
        serving_before = _ask(client, tenant)["index_version"]
        res = dg.materialize(
            [index_candidate, candidate_passes_golden_eval, active_index], raise_on_error=False,
            resources=definitions.defs.resources,
            run_config={"ops": {"index_candidate": {"config": {
                "kind": "rebuild", "reason": "try hash-embed", "tenants": [tenant.name],
                "embedding_model": "openai/hash-embed", "embedding_dim": 64}}}})
        built = res.asset_materializations_for_node("index_candidate")[0].metadata["candidates"].value[tenant.name]
        with tenant_session(tenant.id) as s:
            cfg, status = s.execute(text("SELECT config, status FROM index_versions WHERE version = :v"),
                                    {"v": built["version"]}).one()
        assert cfg["embedding_model"] == "openai/hash-embed" and cfg["embedding_dim"] == 64
        check = {c.check_name: c for c in res.get_asset_check_evaluations()}["candidate_passes_golden_eval"]
        verdict = check.metadata["verdicts"].value[tenant.name]
        # Chunks (build) and 60 golden questions (gate, candidate side) went to the new model's endpoint.
        assert len(server.calls) >= 60
        assert check.passed is False and status == "rejected", verdict
        assert verdict["candidate"]["mrr"] < verdict["active"]["mrr"]
        calls = len(server.calls)
        after = _ask(client, tenant)
        assert after["index_version"] == serving_before and after["citations"]
        assert len(server.calls) == calls  # the serving version embeds queries with its own (local) model
    finally:
        server.close()
        get_settings.cache_clear()


def test_a_boost_set_that_hurts_the_golden_set_is_rejected_and_not_retried(client, tenant, gated):
    """Feedback boosts are gated like a rebuild: users who (wrongly) rate down every answer from three
    of the six documents produce a boost set that buries them; the gate rejects it, the serving
    version keeps its ranking, and the same boost set is not built again."""
    import definitions
    from assets.indexing import active_index, candidate_passes_golden_eval, index_candidate
    from tests.builders import answer_citing, bearer

    with tenant_session(tenant.id) as s:
        serving = s.execute(text("SELECT version, chunk_generation FROM index_versions WHERE status = 'active'")).one()
        chunks = s.execute(text(
            "SELECT c.id, c.document_id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.generation = :g "
            "AND d.title IN ('sop-114-lockout-tagout', 'mm-310-welding-robot-manual', 'qr-2026-044-weld-porosity')"),
            {"g": serving[1]}).all()
    assert len(chunks) >= 3
    for i, (cid, did) in enumerate(chunks * 3):
        user = f"grumpy-{i}"
        mid = answer_citing(tenant, user, did, cid)
        assert client.post("/v1/feedback", json={"message_id": str(mid), "rating": "down"},
                           headers=bearer(tenant, user)).status_code == 201
    before = _ask(client, tenant)

    def refresh():
        return dg.materialize([index_candidate, candidate_passes_golden_eval, active_index], raise_on_error=False,
                              resources=definitions.defs.resources,
                              run_config={"ops": {"index_candidate": {"config": {
                                  "kind": "boosts", "reason": "nightly", "tenants": [tenant.name]}}}})

    res = refresh()
    built = res.asset_materializations_for_node("index_candidate")[0].metadata["candidates"].value[tenant.name]
    assert built["generation"] == serving[1] and built["boosts"]["documents"] == 3  # same chunks, new boosts
    check = {c.check_name: c for c in res.get_asset_check_evaluations()}["candidate_passes_golden_eval"]
    verdict = check.metadata["verdicts"].value[tenant.name]
    assert check.passed is False and verdict["candidate"]["mrr"] < verdict["active"]["mrr"] - 0.02, verdict
    assert not res.asset_materializations_for_node("active_index")
    after = _ask(client, tenant)
    assert after["index_version"] == serving[0] == before["index_version"]
    assert [c["chunk_id"] for c in after["citations"]] == [c["chunk_id"] for c in before["citations"]]

    again = refresh()
    skipped = again.asset_materializations_for_node("index_candidate")[0].metadata["skipped"].value
    assert skipped[tenant.name] == f"this boost set was rejected by the gate as version {built['version']}"


def test_rollback_serves_the_previous_version_again_caught_up(client, tenant, tmp_path):
    """Job rollback_search_index: the version the active one replaced serves again, including a
    document indexed after it was replaced; then the rolled-back-from version can be restored too."""
    import definitions
    from benchmarks.common import ingest_in_process

    with tenant_session(tenant.id) as s:
        current, previous = s.execute(text(
            "SELECT (SELECT version FROM index_versions WHERE status = 'active'), "
            "(SELECT version FROM index_versions WHERE status = 'retired' ORDER BY decided_at DESC LIMIT 1)")).one()
        prev_gen = s.execute(text("SELECT chunk_generation FROM index_versions WHERE version = :v"),
                             {"v": previous}).scalar()
    late = tmp_path / "after-promotion.md"
    late.write_text("# Notice N-78\n\nThe chiller of line 4 is descaled every 900 operating hours.\n")
    ingest_in_process(tenant.id, [late], tmp_path)  # written into the current version only

    job = definitions.defs.resolve_job_def("rollback_search_index")
    res = job.execute_in_process(run_config={"ops": {"active_index": {"config": {"rollback": [tenant.name]}}}},
                                 resources=definitions.defs.resources)
    assert res.success
    meta = res.asset_materializations_for_node("active_index")[0].metadata
    assert meta["rolled_back"].value[tenant.name] == {"version": previous, "from_version": current,
                                                       "generation": prev_gen}
    assert _versions(tenant)[previous][0] == "active" and _versions(tenant)[current][0] == "retired"
    with tenant_session(tenant.id) as s:
        caught_up = s.execute(text("SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
                                   "WHERE d.title = 'after-promotion' AND c.generation = :g"), {"g": prev_gen}).scalar()
        audited = s.execute(text("SELECT count(*) FROM audit_events "
                                 "WHERE action = 'index.version.rolled_back'")).scalar()
    assert caught_up >= 1 and audited == 1
    assert _ask(client, tenant)["index_version"] == previous

    # And back: the version rolled back from is the one kept, so it can be restored in turn.
    res = job.execute_in_process(run_config={"ops": {"active_index": {"config": {"rollback": [tenant.name]}}}},
                                 resources=definitions.defs.resources)
    assert res.success and _ask(client, tenant)["index_version"] == current
    bad = job.execute_in_process(run_config={"ops": {"active_index": {"config": {"rollback": ["no-such-tenant"]}}}},
                                 resources=definitions.defs.resources, raise_on_error=False)
    assert not bad.success
