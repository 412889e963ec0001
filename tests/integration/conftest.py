import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(platform_db):
    """The real app (lifespan included) against the session's embedded database."""
    from serving.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="module")
def dagster_env(platform_db, client):
    """The ingestion pipeline as the daemon runs it, in process, on an ephemeral instance: returns the
    instance, `run_pipeline()` (one intake sensor tick, then every run it requested) and
    `review(doc_id, decision, ...)` (job steward_review with an approval token from the API)."""
    import dagster as dg

    import definitions
    from tests.builders import steward_review_config

    inst = dg.DagsterInstance.ephemeral()
    state = {"cursor": None}

    def run_pipeline() -> list[dg.ExecuteInProcessResult]:
        from sensors.ingestion import document_intake

        ctx = dg.build_sensor_context(instance=inst, cursor=state["cursor"],
                                      resources={"db": definitions.defs.resources["db"]})
        res = document_intake(ctx)
        if isinstance(res, dg.SkipReason):
            return []
        state["cursor"] = res.cursor
        for req in res.dynamic_partitions_requests:
            inst.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
        job = definitions.defs.resolve_job_def("ingest_documents")
        return [job.execute_in_process(instance=inst, tags=rr.tags, partition_key=rr.partition_key,
                                       resources={"db": definitions.defs.resources["db"]})
                for rr in res.run_requests]

    def review(doc_id, decision, steward="sam.steward", reason="checked against export list", raise_on_error=True):
        # The steward's approval comes from the platform API, as in production; no steward, no token.
        run_config = (steward_review_config(client, doc_id, decision, reason, steward=steward) if steward
                      else {"ops": {"search_index": {"config": {"decision": decision, "reason": reason}}}})
        job = definitions.defs.resolve_job_def("steward_review")
        return job.execute_in_process(
            instance=inst, partition_key=str(doc_id), raise_on_error=raise_on_error, run_config=run_config,
            resources={"db": definitions.defs.resources["db"]})

    return inst, run_pipeline, review
