"""Issue 15 #6, as a data steward tries it: the Dagster UI (a real dagster-webserver on loopback, headless Debian
Chromium driven by Playwright) shows the document waiting for review in the review queue — title, tenant, class
with the detectors' reasons, uploader, sanitised preview — and flags its partition; the steward's approval goes
through the job the UI launches: the browser sends the Launchpad's GraphQL `launchPipelineExecution` for job
steward_review with the run config the platform API returned, the webserver's run launcher runs it in a run
worker of its own, and the document is indexed with the steward on record.

Screenshots are written to tests/browser/screenshots/ (see README.md)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

BODY = ("# Line 4 welding cell: operator contacts\n\nShift leads: jana.novak@weldcorp.eu, petr.svoboda@weldcorp.eu "
        "and olga.marek@weldcorp.eu. Weld current 210 A on the cell controller.\n")
TITLE = "Line 4 welding cell contacts"
REASON = "contact list of the cell, needed by the shift leads"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def _resources() -> dict:
    import definitions

    return {"db": definitions.defs.resources["db"]}


@pytest.fixture(scope="module")
def pending_doc(client, dagster_ui, run_pipeline):
    """A Class I upload whose contact list the PII detector raised to III: it waits for a steward; the watch
    sensor has flagged its partition and the review queue has been refreshed on the UI's instance."""
    import uuid

    import dagster as dg

    from assets.steward import review_queue
    from identity.tenancy import create_tenant
    from sensors.steward import steward_review_watch
    from tests.builders import document_row, upload_file

    instance, _ = dagster_ui
    t, _ = create_tenant(f"ui-{uuid.uuid4().hex[:10]}")
    doc = upload_file(client, t, "line4.md", BODY.encode(), classification="I", acl_groups="welding",
                      title=TITLE).json()["document_id"]
    assert all(r.success for r in run_pipeline())
    assert (document_row(t.id, doc)["status"], document_row(t.id, doc)["classification"]) == ("awaiting_approval", 3)
    steward_review_watch(dg.build_sensor_context(instance=instance, resources=_resources()))
    assert dg.materialize([review_queue], instance=instance, resources=_resources()).success
    return t, doc


def _graphql(page, base: str, query: str, variables: dict) -> dict:
    """POST to the webserver's GraphQL endpoint from the page, as the UI does."""
    return page.evaluate(
        """async ([url, query, variables]) => {
               const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({query, variables})});
               return await r.json();
           }""", [f"{base}/graphql", query, variables])


def test_steward_finds_the_pending_document_in_the_review_queue(dagster_ui, pending_doc, browser_page, screenshots):
    _, base = dagster_ui
    t, doc = pending_doc
    page = browser_page
    page.goto(f"{base}/assets/review_queue", wait_until="networkidle")
    # The queue's own row (the markdown table is nested in the metadata table's "queue" row).
    row = page.locator("tr", has_text=TITLE).filter(has_text="Class III").last
    row.wait_for(timeout=60_000)
    text = row.inner_text()
    assert t.name in text and "Class III" in text and "PII: 3 findings (EMAIL" in text
    assert "operator@t" in text and doc[:8] in text
    assert "[EMAIL]" in text and "weldcorp.eu" not in page.inner_text("body")  # the preview is sanitised
    page.screenshot(path=str(screenshots / "review_queue.png"), full_page=True)

    # The partition is flagged: the steward_review_pending check on search_index has failed (WARN).
    page.goto(f"{base}/assets/search_index?view=checks", wait_until="networkidle")
    check = page.get_by_text("steward_review_pending", exact=True).first
    check.wait_for(timeout=60_000)
    check.click()
    page.get_by_text("waits for a data steward").first.wait_for(timeout=60_000)
    page.screenshot(path=str(screenshots / "steward_check.png"), full_page=True)
    body = page.inner_text("body")
    assert TITLE in body and doc in body
    page.screenshot(path=str(screenshots / "steward_check.png"), full_page=True)


def test_steward_approves_through_the_job_the_ui_launches(client, dagster_ui, pending_doc, browser_page,
                                                          screenshots):
    import dagster as dg

    from assets.steward import review_queue
    from tests.builders import chunk_rows, document_row, ensure_steward, steward_review_config

    _, base = dagster_ui
    t, doc = pending_doc
    page = browser_page
    page.goto(f"{base}/jobs", wait_until="networkidle")
    ensure_steward(t.id, "sam.steward", "operator", ["welding"])
    run_config = steward_review_config(client, doc, "approve", REASON, steward="sam.steward")
    params = {"selector": {"repositoryLocationName": "eap", "repositoryName": "__repository__",
                           "pipelineName": "steward_review"},
              "runConfigData": run_config, "mode": "default",
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": doc}]}}

    # Without the token (what anyone reaching the webserver could send) the run fails and changes nothing.
    unauth = {**params, "runConfigData": {"ops": {"search_index": {"config": {"decision": "approve",
                                                                             "reason": REASON}}}}}
    res = _graphql(page, base, LAUNCH, {"params": unauth})["data"]["launchPipelineExecution"]
    assert res["__typename"] == "LaunchRunSuccess", res
    assert _wait(page, base, res["run"]["runId"]) == "FAILURE"
    assert document_row(t.id, doc)["status"] == "awaiting_approval"

    res = _graphql(page, base, LAUNCH, {"params": params})["data"]["launchPipelineExecution"]
    assert res["__typename"] == "LaunchRunSuccess", res
    run_id = res["run"]["runId"]
    assert _wait(page, base, run_id) == "SUCCESS"
    row = document_row(t.id, doc)
    assert (row["status"], row["review_status"], row["reviewed_by"]) == ("indexed", "approved", "sam.steward")
    assert chunk_rows(t.id, doc)

    page.goto(f"{base}/runs/{run_id}", wait_until="networkidle")
    page.get_by_text("steward_review").first.wait_for(timeout=60_000)
    page.screenshot(path=str(screenshots / "steward_review_run.png"), full_page=True)

    # The queue no longer lists it.
    instance, _ = dagster_ui
    assert dg.materialize([review_queue], instance=instance, resources=_resources()).success
    page.goto(f"{base}/assets/review_queue", wait_until="networkidle")
    page.get_by_text("pending").first.wait_for(timeout=60_000)
    assert TITLE not in page.inner_text("body")


def _wait(page, base: str, run_id: str, timeout_s: float = 420) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = _graphql(page, base, STATUS, {"id": run_id})["data"]["runOrError"]
        if out.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
            return out["status"]
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s:.0f} s")
