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
    from tests.builders import run_intake, steward_review_config

    inst = dg.DagsterInstance.ephemeral()
    state = {"cursor": None}

    def run_pipeline() -> list[dg.ExecuteInProcessResult]:
        return run_intake(inst, state)

    def review(doc_id, decision, steward="sam.steward", reason="checked against export list", raise_on_error=True):
        # The steward's approval comes from the platform API, as in production; no steward, no token.
        run_config = (steward_review_config(client, doc_id, decision, reason, steward=steward) if steward
                      else {"ops": {"search_index": {"config": {"decision": decision, "reason": reason}}}})
        job = definitions.defs.resolve_job_def("steward_review")
        return job.execute_in_process(
            instance=inst, partition_key=str(doc_id), raise_on_error=raise_on_error, run_config=run_config,
            resources=definitions.defs.resources)

    return inst, run_pipeline, review


@pytest.fixture
def scratch_tenants():
    """Tenants this test tampers with, dropped afterwards as the superuser (their audit rows and anchors included,
    with the append-only triggers briefly off) with their checkpoints, so no later test meets a chain broken on
    purpose."""
    ids: list = []
    yield ids
    if not ids:
        return
    import shutil

    import sqlalchemy as sa
    from sqlalchemy import text

    from compliance import audit
    from core.db.database import get_urls

    eng = sa.create_engine(get_urls().admin)
    try:
        with eng.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            conn.execute(text("ALTER TABLE audit_anchors DISABLE TRIGGER audit_anchors_append_only"))
            conn.execute(text("DELETE FROM tenants WHERE id = ANY(:ids)"), {"ids": [str(i) for i in ids]})
            conn.execute(text("ALTER TABLE audit_anchors ENABLE TRIGGER audit_anchors_append_only"))
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    finally:
        eng.dispose()
    for i in ids:
        shutil.rmtree(audit.checkpoint_dir() / str(i), ignore_errors=True)


@pytest.fixture(scope="module")
def rsa_key():
    """An RSA signing key for locally issued OIDC tokens (see tests.builders.local_jwks)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def live_server(platform_db):
    """The app on a real uvicorn server on loopback: (app, base_url)."""
    from tests.builders import live_app

    with live_app() as (app, url):
        yield app, url
