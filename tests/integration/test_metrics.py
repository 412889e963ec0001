"""/metrics through the real app: Prometheus text that parses, and series that move when a chat question is
asked; the request id of a request reaches the response header, the orchestrator's audit record and the logs."""

from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from core.db.database import tenant_session
from tests.builders import bearer, index_plant


def _scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):  # raises on anything that is not the text format
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == want for k, want in labels.items()))


def test_metrics_parse_and_move_with_a_chat_question(client, make_tenant, caplog):
    from serving.metrics import PLATFORM

    t = index_plant(make_tenant("metrics"))
    PLATFORM.invalidate()
    before = _scrape(client)
    for name in ("eap_ingestion_documents", "eap_pending_approvals", "eap_retrieval_duration_seconds_count",
                 "eap_ingestion_duration_seconds_count"):
        assert any(n == name for n, _ in before), name

    with caplog.at_level(logging.INFO):
        r = client.post("/v1/chat", json={"message": "How often is the hydraulic oil of press P3 changed?"},
                        headers={**bearer(t, "mia"), "X-Request-ID": "req-metrics-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["citations"], body
    assert r.headers["x-request-id"] == "req-metrics-1"

    PLATFORM.invalidate()
    after = _scrape(client)
    route = {"route": "/v1/chat", "method": "POST", "status": "200"}
    assert _total(after, "eap_http_requests_total", **route) == _total(before, "eap_http_requests_total", **route) + 1
    assert _total(after, "eap_http_request_duration_seconds_count", route="/v1/chat") == \
        _total(before, "eap_http_request_duration_seconds_count", route="/v1/chat") + 1
    spec = {"specialist": body["specialist"], "tier": body["tier"]} if "tier" in body else {}
    assert _total(after, "eap_chat_answers_total", **spec) == _total(before, "eap_chat_answers_total", **spec) + 1
    assert _total(after, "eap_retrieval_duration_seconds_count") == \
        _total(before, "eap_retrieval_duration_seconds_count") + 1
    assert _total(after, "eap_retrieval_duration_seconds_sum") > _total(before, "eap_retrieval_duration_seconds_sum")

    # The id reached the audit record the chat use case wrote (in the worker thread that ran the orchestrator).
    with tenant_session(t.id) as s:
        details = s.execute(text("SELECT details FROM audit_events WHERE tenant_id = :t AND action = 'chat' "
                                 "ORDER BY seq DESC LIMIT 1"), {"t": str(t.id)}).scalar_one()
    assert details["request_id"] == "req-metrics-1"


def test_route_templates_bound_labels_and_bad_request_ids_are_replaced(client, make_tenant):
    t = make_tenant("metrics")
    r = client.get("/v1/documents/00000000-0000-0000-0000-000000000000", headers={
        **bearer(t, "mia"), "X-Request-ID": "bad id\twith spaces " + "x" * 80})
    assert r.status_code == 404
    rid = r.headers["x-request-id"]
    assert rid and " " not in rid and len(rid) <= 64
    samples = _scrape(client)
    assert _total(samples, "eap_http_requests_total", route="/v1/documents/{document_id}", status="404") >= 1
    assert not any("00000000-0000" in str(lab) for _, lab in samples)
    # An unauthenticated request refused by the guard is counted too, and still gets an id.
    r = client.get("/v1/documents")
    assert r.status_code == 401 and r.headers["x-request-id"]
    assert _total(_scrape(client), "eap_http_requests_total", route="unrouted", status="401") >= 1


def test_grafana_dashboard_queries_only_metrics_the_api_exports(client, make_tenant):
    """deploy/grafana/eap-dashboard.json: valid JSON whose every PromQL expression names series /metrics has."""
    import json
    import re
    from pathlib import Path

    from serving.metrics import PLATFORM

    t = index_plant(make_tenant("dash"))
    assert client.post("/v1/chat", json={"message": "hydraulic oil of press P3"}, headers=bearer(t, "dash")
                       ).status_code == 200
    PLATFORM.invalidate()
    exported = {name for name, _ in _scrape(client)}
    # Families the collector builds but that have no sample yet (no model usage, no failed delivery) are not
    # printed; their names come from the collector itself.
    from serving.metrics import read_platform_metrics

    exported |= {m.name + ("_total" if m.type == "counter" else "") for m in read_platform_metrics()}
    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "eap-dashboard.json").read_text())
    exprs = [tgt["expr"] for p in dash["panels"] for tgt in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        for name in re.findall(r"\beap_[a-z_]+", expr):
            assert name in exported, (name, expr)

