"""Operations: request ids and Prometheus metrics.

`RequestContext` (pure ASGI, outermost) gives every request an id (the client's well-formed
X-Request-ID or a fresh one), puts it in `core.logging.REQUEST_ID` for the whole request — so log lines,
the orchestrator's work and the audit records written for the request carry it — returns it as the
X-Request-ID response header, and counts/times the request by route *template* and status.

`GET /metrics` serves the Prometheus text format:
- in-process series (HTTP requests): prometheus_client's multi-process mode when
  PROMETHEUS_MULTIPROC_DIR is set (`eap serve api --workers N` sets it), so N workers add up;
- platform series read from PostgreSQL at scrape time (chat answers by specialist/tier/outcome, model
  tokens and cost, retrieval latency from the stored agent-run traces, documents by status and the
  queue-to-index duration, pending approvals, failed alert deliveries). They are the same whichever
  process answers, and they count work done by other processes (Dagster run workers, other API
  workers) without any shared memory. Read once per METRICS_DB_TTL_S per process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging import REQUEST_ID, accept_request_id

METRICS_DB_TTL_S = 10.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INGEST_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# Created unregistered: each scrape builds its own registry (multi-process or not, see metrics_text).
HTTP_REQUESTS = Counter("eap_http_requests", "API requests by method, route template and status",
                        ["method", "route", "status"], registry=None)
HTTP_LATENCY = Histogram("eap_http_request_duration_seconds", "API request latency by method and route template",
                         ["method", "route"], buckets=LATENCY_BUCKETS, registry=None)
IN_PROCESS = (HTTP_REQUESTS, HTTP_LATENCY)

router = APIRouter(tags=["ops"])


def route_template(scope: Scope) -> str:
    """`/v1/documents/{document_id}`, not the id: bounded label values. The router leaves the matched
    route in the scope; a request answered before routing (the guard's 401/413/422, an unknown path)
    is `unrouted`."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unrouted"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), None)
        rid = accept_request_id(header)
        token = REQUEST_ID.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = route_template(scope)
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
            REQUEST_ID.reset(token)


# --------------------------------------------------------------------------- platform series from PostgreSQL

_SQL = {
    "chat": "SELECT specialist, model_tier, outcome, count(*) FROM agent_runs GROUP BY 1, 2, 3",
    "usage": "SELECT tier, model, sum(prompt_tokens), sum(completion_tokens), sum(cost) FROM usage_records "
             "GROUP BY 1, 2",
    "documents": "SELECT status, count(*) FROM documents GROUP BY 1",
    "alerts": "SELECT channel, count(*) FROM alert_deliveries WHERE status <> 'delivered' GROUP BY 1",
}


def _histogram_sql(values_sql: str, buckets: tuple[float, ...]) -> str:
    cols = ", ".join(f"count(*) FILTER (WHERE v <= {b})" for b in buckets)
    return f"SELECT {cols}, count(*), coalesce(sum(v), 0) FROM ({values_sql}) AS x"


# Retrieval time of each stored chat answer: the `THINK.retrieve` step of its typed trace (agents/trace.py).
_RETRIEVAL = _histogram_sql(
    "SELECT (step->>'ms')::float / 1000.0 AS v FROM agent_runs, jsonb_array_elements(trace) AS step "
    "WHERE step->>'step' = 'THINK.retrieve' AND step ? 'ms'", LATENCY_BUCKETS)
# Queue-to-index time of documents the pipeline finished (indexed or awaiting a steward).
_INGEST = _histogram_sql(
    "SELECT extract(epoch FROM updated_at - queued_at) AS v FROM documents "
    "WHERE status IN ('indexed', 'awaiting_approval')", INGEST_BUCKETS)


def _hist_family(name: str, doc: str, row: Any, buckets: tuple[float, ...]) -> HistogramMetricFamily:
    counts = list(row)
    cumulative = [(str(b), float(counts[i])) for i, b in enumerate(buckets)]
    cumulative.append(("+Inf", float(counts[len(buckets)])))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=float(counts[len(buckets) + 1]))


def read_platform_metrics() -> list[Metric]:
    import sqlalchemy as sa

    from core.db.database import system_session

    # A platform read across tenants (aggregates only, no tenant label): the system identity, not a
    # request's tenant session.
    with system_session() as s:
        rows = {k: s.execute(sa.text(q)).all() for k, q in _SQL.items()}
        retrieval = s.execute(sa.text(_RETRIEVAL)).one()
        ingest = s.execute(sa.text(_INGEST)).one()
    chat = CounterMetricFamily("eap_chat_answers", "Stored chat answers by specialist, model tier and outcome",
                               labels=["specialist", "tier", "outcome"])
    for spec, tier, outcome, n in rows["chat"]:
        chat.add_metric([spec, tier, outcome], n)
    tokens = CounterMetricFamily("eap_model_tokens", "Model tokens by tier, model and kind",
                                 labels=["tier", "model", "kind"])
    cost = CounterMetricFamily("eap_model_cost", "Model cost (price table units) by tier and model",
                               labels=["tier", "model"])
    for tier, model, p_tok, c_tok, c in rows["usage"]:
        tokens.add_metric([tier, model, "prompt"], float(p_tok or 0))
        tokens.add_metric([tier, model, "completion"], float(c_tok or 0))
        cost.add_metric([tier, model], float(c or 0))
    docs = GaugeMetricFamily("eap_ingestion_documents", "Documents by pipeline status (outcome)", labels=["status"])
    by_status = dict.fromkeys(("queued", "parsing", "awaiting_approval", "indexed", "rejected", "failed"), 0)
    by_status.update({status: n for status, n in rows["documents"]})
    for status, n in sorted(by_status.items()):
        docs.add_metric([status], n)
    pending = GaugeMetricFamily("eap_pending_approvals", "Documents waiting for a data steward's decision",
                                value=by_status["awaiting_approval"])
    failures = CounterMetricFamily("eap_alert_dispatch_failures", "Alert deliveries that were not delivered",
                                   labels=["channel"])
    for channel, n in rows["alerts"]:
        failures.add_metric([channel], n)
    return [chat, tokens, cost, docs, pending, failures,
            _hist_family("eap_retrieval_duration_seconds", "Retrieval time of stored chat answers",
                         retrieval, LATENCY_BUCKETS),
            _hist_family("eap_ingestion_duration_seconds", "Queue-to-index time of ingested documents",
                         ingest, INGEST_BUCKETS)]


class PlatformCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > METRICS_DB_TTL_S:
                self._cached = (now, read_platform_metrics())
            metrics = self._cached[1]
        yield from metrics

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None


PLATFORM = PlatformCollector()


def metrics_text() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for m in IN_PROCESS:
            registry.register(m)
    registry.register(PLATFORM)
    return generate_latest(registry)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text exposition (unauthenticated like /healthz; restrict it with the NetworkPolicy)."""
    return Response(await run_in_threadpool(metrics_text), media_type=CONTENT_TYPE_LATEST)
