"""Issue 12 finding 6: ingestion recovers. Documents of a run that died are requeued by the intake
sensor (bounded attempts, then `failed` with the reason); one large document does not hold small
ones back; OCR and embedding have per-document budgets with a clear reason; quick re-uploads of one
name end indexed with the last version. The real sensor, the real ingest job, the real database."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest
from PIL import Image
from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.settings import get_settings
from ingestion import submission
from tests.builders import text_image
from tests.integration.ingest_harness import Pipeline

RAW_ONLY = [dg.AssetKey("document_raw")]


@pytest.fixture
def pipeline(platform_db):
    p = Pipeline()
    _drain(p)  # documents other test modules left queued are not this module's subject
    return p


@pytest.fixture
def env(monkeypatch):
    """Set EAP_* settings for one test."""

    def _set(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"EAP_{k.upper()}", str(v))
        get_settings.cache_clear()

    yield _set
    monkeypatch.undo()
    get_settings.cache_clear()


def _drain(p: Pipeline) -> None:
    with system_session() as s:
        s.execute(text("UPDATE documents SET status = 'failed', status_reason = 'left by another test' "
                       "WHERE status IN ('queued', 'parsing')"))


def _submit(tenant, name: str, data: bytes, **kw) -> str:
    sub = submission.submit_document(tenant.id, filename=name, stream=io.BytesIO(data), actor="test", **kw)
    return str(sub.document_id)


def _doc(tenant, doc_id: str):
    with tenant_session(tenant.id) as s:
        return s.execute(text("SELECT * FROM documents WHERE id = :i"), {"i": doc_id}).mappings().one()


def _chunk_rows(tenant, doc_id: str) -> list:
    with tenant_session(tenant.id) as s:
        return s.execute(text("SELECT ordinal, text, generation FROM chunks WHERE document_id = :i ORDER BY ordinal"),
                         {"i": doc_id}).all()


def _die_after_taking(p: Pipeline, rr: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """A run that took its documents (`document_raw`) and then stopped: what a killed run worker
    leaves behind — documents `parsing`, held by a run that will never finish them."""
    job = p.defs.resolve_job_def("ingest_documents")
    return job.execute_in_process(instance=p.instance, tags=rr.tags, partition_key=rr.partition_key,
                                  resources=p.resources, asset_selection=RAW_ONLY)


def test_documents_of_a_dead_run_are_requeued_as_one_run_and_indexed(pipeline, make_tenant):
    t = make_tenant("dead")
    ids = [_submit(t, f"sop-{i}.md", f"# SOP-{i}\n\nTighten bolt B{i} to {20 + i} Nm.".encode()) for i in range(3)]
    res = pipeline.tick()
    assert len(res.run_requests) == 1
    dead = _die_after_taking(pipeline, res.run_requests[0])
    assert {_doc(t, d)["status"] for d in ids} == {"parsing"}
    assert {_doc(t, d)["ingest_run_id"] for d in ids} == {dead.run_id}

    again = pipeline.tick()  # finds the run gone, requeues, and launches one range run for the three
    assert isinstance(again, dg.SensorResult) and len(again.run_requests) == 1, again
    rr = again.run_requests[0]
    assert rr.tags["dagster/asset_partition_range_start"] == ids[0]
    assert rr.tags["dagster/asset_partition_range_end"] == ids[-1]
    assert rr.run_key != res.run_requests[0].run_key
    for d in ids:
        row = _doc(t, d)
        assert row["status"] == "queued" and row["ingest_attempts"] == 1
        assert row["status_reason"].startswith("requeued (attempt 2 of 3)") and dead.run_id[:8] in row["status_reason"]
    assert pipeline.execute(rr).success
    for d in ids:
        row = _doc(t, d)
        assert row["status"] == "indexed", row["status_reason"]
        chunks = _chunk_rows(t, d)
        assert len(chunks) == row["chunk_count"] and len({c.ordinal for c in chunks}) == len(chunks)  # none twice
    assert isinstance(pipeline.tick(), dg.SkipReason)
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'document.requeued'")).scalar() == 3


def test_after_max_attempts_the_document_fails_with_the_reason(pipeline, make_tenant, env):
    env(ingest_max_attempts=2)
    t = make_tenant("giveup")
    d = _submit(t, "manual.md", b"# Manual\n\nOil: HLP 46.")
    for _ in range(2):
        res = pipeline.tick()
        assert len(res.run_requests) == 1
        _die_after_taking(pipeline, res.run_requests[0])
        assert _doc(t, d)["status"] == "parsing"
    final = pipeline.tick()
    assert isinstance(final, dg.SkipReason) and "1 failed" in final.skip_message
    row = _doc(t, d)
    assert row["status"] == "failed"
    assert "gave up after 2 attempts" in row["status_reason"] and "upload it again" in row["status_reason"]
    assert isinstance(pipeline.tick(), dg.SkipReason)  # never retried on its own again
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT details->>'reason' FROM audit_events WHERE action = 'document.failed'")
                         ).scalar() == row["status_reason"]


def test_a_document_stuck_without_a_run_is_requeued(pipeline, make_tenant):
    """What the adversarial run left behind (20 documents `parsing` forever) is picked up."""
    t = make_tenant("stuck")
    d = _submit(t, "notes.txt", b"Check the coolant level every morning.")
    with tenant_session(t.id) as s:
        s.execute(text("UPDATE documents SET status = 'parsing', ingest_run_id = :r WHERE id = :i"),
                  {"i": d, "r": str(uuid.uuid4())})
    assert all(r.success for r in pipeline.run())
    assert _doc(t, d)["status"] == "indexed"


def test_one_large_document_does_not_hold_small_ones_back(pipeline, make_tenant, env):
    env(ingest_large_bytes=4000)
    t = make_tenant("large")
    big = _submit(t, "big.md", ("# Big manual\n\n" + "The press must be inspected weekly. " * 150).encode())
    small = [_submit(t, f"s{i}.md", f"# S{i}\n\nValve V{i} opens at {i} bar.".encode()) for i in range(3)]
    res = pipeline.tick()
    assert len(res.run_requests) == 2
    first, second = res.run_requests
    assert first.tags["eap/documents"] == "3" and first.tags["dagster/priority"] == "1"
    assert first.tags["dagster/asset_partition_range_start"] == small[0]
    assert second.partition_key == big and second.tags["dagster/priority"] == "-1"
    assert int(second.tags["dagster/max_runtime"]) > 0
    assert pipeline.execute(first).success
    assert {_doc(t, d)["status"] for d in small} == {"indexed"} and _doc(t, big)["status"] == "queued"
    assert pipeline.execute(second).success
    assert _doc(t, big)["status"] == "indexed"


def _scanned_pdf(pages: int) -> bytes:
    imgs = [Image.open(io.BytesIO(text_image([f"Scanned page {i + 1}", "Torque 25 Nm."]))).convert("RGB")
            for i in range(pages)]
    buf = io.BytesIO()
    imgs[0].save(buf, format="PDF", save_all=True, append_images=imgs[1:])
    return buf.getvalue()


def test_ocr_and_embedding_budgets_fail_the_document_alone_with_the_reason(pipeline, make_tenant, env):
    env(ocr_max_pages=1, ocr_timeout_s=0.01, embed_max_chunks=3)
    t = make_tenant("budget")
    pages = _submit(t, "scan.pdf", _scanned_pdf(2))
    slow = _submit(t, "photo.png", text_image(["Label: coolant 6 percent"]))
    long = _submit(t, "long.md", "\n\n".join(f"## Step {i}\n\n" + f"Step {i} text. " * 120
                                             for i in range(10)).encode())
    ok = _submit(t, "ok.md", b"# OK\n\nGrease the ram bearings every 500 hours.")
    assert all(r.success for r in pipeline.run())
    reasons = {k: _doc(t, d)["status_reason"] for k, d in {"pages": pages, "slow": slow, "long": long}.items()}
    for d in (pages, slow, long):
        assert _doc(t, d)["status"] == "failed"
    assert reasons["pages"] == "parse: OCR budget exceeded: 2 scanned pages, at most 1 per document (EAP_OCR_MAX_PAGES)"
    assert reasons["slow"].startswith("parse: OCR time budget exceeded: 0.01 s per document (EAP_OCR_TIMEOUT_S)")
    assert reasons["long"].startswith("chunk: embedding budget exceeded") and "EAP_EMBED_MAX_CHUNKS" in reasons["long"]
    assert _doc(t, ok)["status"] == "indexed"


def test_sixteen_quick_reuploads_of_one_name_end_indexed_with_the_last_version(make_tenant, platform_db):
    """Runs for versions 1…16 of one file run concurrently with the uploads; none may fail the
    document because another run cleared its stage files, and the last version is what serves."""
    from assets.resources import PlatformDatabase

    p = Pipeline(dg.DagsterInstance.local_temp())
    # The schema is migrated already; concurrent run workers would otherwise race in bootstrap().
    p.db = PlatformDatabase(check_schema=False)
    _drain(p)
    t = make_tenant("reup")
    futures = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        for i in range(16):
            d = _submit(t, "sop.md", f"# SOP rev {i}\n\nTorque setting revision {i} is {30 + i} Nm.".encode())
            res = p.tick()
            if isinstance(res, dg.SensorResult):
                futures += [pool.submit(p.execute, rr) for rr in res.run_requests]
        results = [f.result() for f in futures]
    # A tick may find nothing new: a run launched for an older version already took the newest one.
    assert 2 <= len(futures) <= 16 and all(r.success for r in results)
    for _ in range(3):  # anything a run could not take is picked up by later ticks
        if not p.run():
            break
    row = _doc(t, d)
    assert (row["status"], row["status_reason"]) == ("indexed", None)
    chunks = _chunk_rows(t, d)
    assert row["indexed_hash"] == row["content_hash"] and len(chunks) == row["chunk_count"]
    assert all("revision 15 is 45 Nm" in c.text for c in chunks)


def test_eap_ingest_waits_while_progress_is_made_and_gives_up_without(pipeline, make_tenant):
    """`eap ingest` has no fixed deadline: a run's heartbeat on a document is progress; once nothing
    moves for --idle-timeout it gives up (here 1 s, polling every 0.1 s)."""
    t = make_tenant("wait")
    d = _submit(t, "long.md", b"# Long\n\nA long document.")
    polls = []

    def beating(rows):
        polls.append(rows)
        if len(polls) <= 30:  # a run working on it: 30 heartbeats, 3 s in all — longer than the idle timeout
            with tenant_session(t.id) as s:
                s.execute(text("UPDATE documents SET ingest_heartbeat_at = clock_timestamp() WHERE id = :i"),
                          {"i": d})

    rows = submission.wait_for(t.id, [uuid.UUID(d)], None, beating, idle_timeout_s=1.0, poll_s=0.1)
    assert rows[uuid.UUID(d)] == "queued"  # gave up: nothing ran it
    assert len(polls) > 30  # but only after the heartbeats stopped
    _drain(pipeline)


def test_eap_ingest_says_what_is_stuck(pipeline, make_tenant):
    """When nothing moves, `eap ingest` stops and says why, from evidence: no daemon heartbeat, documents no
    run picked up, a failed run with its error, documents waiting for a steward — and stops saying it once
    the evidence changes."""
    import datetime as dt
    import time

    from dagster._daemon.types import DaemonHeartbeat

    import definitions
    from eap.ingest_status import diagnose

    t = make_tenant("stuck")
    since = dt.datetime.now(dt.UTC)
    # Nothing ran.
    d1 = _submit(t, "queued.md", b"# Queued\n\nNobody runs me.")
    lines = diagnose(pipeline.instance, t.id, [uuid.UUID(d1)], since)
    assert any("never written a heartbeat" in x for x in lines)
    assert any("never picked up by a run" in x and "document_intake" in x for x in lines)

    # A Class III document reaches the steward; a review without a valid token fails its run.
    d2 = _submit(t, "recipe.md", b"# Recipe\n\nAnneal at 540 C.", classification=3, acl_groups=["metallurgy"])
    pipeline.run()
    assert _doc(t, d2)["status"] == "awaiting_approval"
    job = definitions.defs.resolve_job_def("steward_review")
    res = job.execute_in_process(
        instance=pipeline.instance, partition_key=d2, raise_on_error=False, resources=definitions.defs.resources,
        run_config={"ops": {"search_index": {"config": {"decision": "approve", "reason": "ok",
                                                           "approval_token": "forged"}}}})
    assert not res.success
    lines = diagnose(pipeline.instance, t.id, [uuid.UUID(d1), uuid.UUID(d2)], since)
    failed = [x for x in lines if "steward_review run(s) failed" in x]
    assert failed and res.run_id in failed[0] and "no error message recorded" not in failed[0]
    assert any("1 document(s) wait for a data steward" in x for x in lines)

    # A live daemon: its line goes away.
    pipeline.instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", None, None))
    assert not any("heartbeat" in x for x in diagnose(pipeline.instance, t.id, [uuid.UUID(d2)], since))


def test_eap_ingest_stops_when_nothing_moves_and_lists_what_is_stuck(pipeline, make_tenant, tmp_path, capsys):
    """The CLI end to end with no daemon: it shows throughput while waiting, stops after --idle-timeout
    (not a fixed clock) and lists what it found."""
    from eap.ingest import run_ingest

    t = make_tenant("cli-stuck")
    f = tmp_path / "press-manual.md"
    f.write_text("# Press manual\n\nCheck the ram guide every shift.")
    assert run_ingest([str(f)], t.name, "II", None, wait=True, timeout=None, idle_timeout=1.0) == 1
    out = capsys.readouterr().out
    assert "docs/s" in out and "ETA" in out
    assert "nothing moved for 1 s (--idle-timeout). What is stuck:" in out
    assert "never picked up by a run" in out


def test_documents_arriving_while_runs_wait_are_taken_later_in_one_larger_run(pipeline, make_tenant):
    """Uploads keep arriving while earlier runs wait for a slot: the sensor does not cut them into more small
    runs then; the tick after the queue drains takes them all, in runs sized to the backlog."""
    from sensors.ingestion import QUEUED_RUNS_ENOUGH

    t = make_tenant("queue-wait")
    job = pipeline.defs.resolve_job_def("ingest_documents")
    # NOT_STARTED counts as waiting too (created, not yet picked up); QUEUED runs need a code location here.
    waiting = [pipeline.instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED)
               for _ in range(QUEUED_RUNS_ENOUGH)]
    ids = [_submit(t, f"note-{i}.txt", f"Queue note {i}: torque the flange bolts to 40 Nm.".encode())
           for i in range(3)]
    held = pipeline.tick()
    assert isinstance(held, dg.SensorResult) and not held.run_requests
    assert "3 new documents wait" in (held.skip_reason.skip_message or "")
    assert {_doc(t, d)["status"] for d in ids} == {"queued"}
    for run in waiting:  # the queue drains (here: the waiting runs are cancelled)
        pipeline.instance.report_run_canceled(run)
    results = pipeline.run()
    assert len(results) == 1 and all(r.success for r in results)
    assert {_doc(t, d)["status"] for d in ids} == {"indexed"}


def test_an_upload_still_arriving_while_runs_are_in_flight_is_cut_once_it_is_complete(pipeline, make_tenant,
                                                                                      monkeypatch):
    """With no run in flight, the first documents are cut at once. While a run is in flight and documents keep
    arriving, the tick holds them until the backlog stops growing (at most ARRIVAL_HOLD_MAX_S), then cuts the
    whole backlog once, instead of a pair now and the stragglers as a pair of their own at the end."""
    import sensors.ingestion as intake_sensor

    t = make_tenant("arrivals")
    first = [_submit(t, f"a-{i}.txt", f"Arrival note {i}: clean the nozzle every {i + 2} shifts.".encode())
             for i in range(2)]
    cut = pipeline.tick()
    assert isinstance(cut, dg.SensorResult) and len(cut.run_requests) == 1  # nothing in flight: at once
    job = pipeline.defs.resolve_job_def("ingest_documents")
    running = pipeline.instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    more = [_submit(t, f"b-{i}.txt", f"Arrival memo {i}: torque the clamp to {20 + i} Nm.".encode())
            for i in range(3)]
    held = pipeline.tick()
    assert isinstance(held, dg.SensorResult) and not held.run_requests
    assert "3 new documents, still arriving" in (held.skip_reason.skip_message or "")
    more.append(_submit(t, "b-3.txt", b"Arrival memo 3: the last one of the upload."))
    assert not pipeline.tick().run_requests  # still growing: held again
    done = pipeline.tick()  # nothing new since the last tick: the upload is complete
    assert isinstance(done, dg.SensorResult) and len(done.run_requests) == 1
    assert done.run_requests[0].tags["eap/documents"] == "4"
    # A trickle that never stops is held at most ARRIVAL_HOLD_MAX_S.
    monkeypatch.setattr(intake_sensor, "ARRIVAL_HOLD_MAX_S", 0.0)
    _submit(t, "c-0.txt", b"Trickle note: check the oil level daily.")
    assert not pipeline.tick().run_requests  # the hold starts
    _submit(t, "c-1.txt", b"Trickle note: drain the condensate weekly.")
    late = pipeline.tick()  # still growing, but held for the longest allowed: cut
    assert isinstance(late, dg.SensorResult) and len(late.run_requests) == 1
    assert late.run_requests[0].tags["eap/documents"] == "2"
    pipeline.instance.report_run_canceled(running)
    assert {_doc(t, d)["status"] for d in first + more} == {"queued"}


def test_a_run_embeds_its_first_slice_while_it_still_prepares_the_rest(pipeline, make_tenant, monkeypatch):
    """The ingest step (op search_index) is pipelined over slices of the run's documents: the first slice's embedding
    starts before the last slice is parsed. The last slice's parse waits here for the first embedding call;
    a step that prepared every document before embedding any (one step per stage, as before) would make it
    wait in vain, and the test fails on `waited`."""
    import threading

    import assets.ingestion as ingestion_assets
    from ingestion import stages

    monkeypatch.setattr(ingestion_assets, "SLICE_DOCS", 2)
    t = make_tenant("slices")
    ids = [_submit(t, f"wi-{i}.md", f"# WI-{i}\n\nSet the press to {100 + i} bar before step {i}.".encode())
           for i in range(6)]
    first_embed, waited, order = threading.Event(), [], []
    real_embed, real_parse = stages.stage_embed, stages.stage_parse

    def embed(jobs, embedder=None):
        order.append(("embed", sorted(str(j.id) for j in jobs)))
        first_embed.set()
        return real_embed(jobs, embedder)

    def parse(job):
        if str(job.id) in ids[4:]:  # the third slice
            waited.append(first_embed.wait(30))
        order.append(("parse", str(job.id)))
        return real_parse(job)

    monkeypatch.setattr(stages, "stage_embed", embed)
    monkeypatch.setattr(stages, "stage_parse", parse)
    res = pipeline.tick()
    assert len(res.run_requests) == 1
    result = pipeline.execute(res.run_requests[0])
    assert result.success
    assert waited == [True, True]
    # Each slice is embedded in one call, after its own documents were parsed.
    embeds = [docs for kind, docs in order if kind == "embed"]
    assert sorted(embeds) == sorted([sorted(ids[0:2]), sorted(ids[2:4]), sorted(ids[4:6])])
    for docs in embeds:
        at = order.index(("embed", docs))
        assert all(order.index(("parse", d)) < at for d in docs)
    for d in ids:
        assert _doc(t, d)["status"] == "indexed"
    # Every stage is still its own asset with one materialization per document.
    mats = result.get_asset_materialization_events()
    for asset in ("document_raw", "document_parsed", "document_chunks", "document_embeddings", "search_index"):
        assert {str(m.partition) for m in mats if m.asset_key.to_user_string() == asset} == set(ids), asset
    emb = next(m.materialization.metadata for m in mats if m.asset_key.to_user_string() == "document_embeddings")
    assert emb["embedded_documents"].value == 6 and emb["chunks"].value >= 6
