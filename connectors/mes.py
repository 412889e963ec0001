"""MES REST read connector: typed, validated, with timeouts and retries.

Every response is validated with pydantic; a garbage or partial response is an error (MESError),
never data. Transient failures (timeouts, connection errors, 5xx) are retried with exponential
backoff; the caller sees one error with a one-line reason.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from core.errors import PlatformError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class MESError(PlatformError):
    code = "mes_unavailable"
    status_code = 502


def _validated(path: str, model: type[M], content: bytes) -> M:
    """The response body as `model`; anything else is a MESError naming the first problem."""
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MESError(f"MES {path}: invalid response ({first['type']} at {'.'.join(map(str, first['loc']))})",
                       code="mes_bad_response") from None


class MachineStatus(BaseModel):
    machine_id: str
    line: str
    name: str
    state: Literal["RUNNING", "DOWN", "IDLE", "SETUP"]
    since: dt.datetime
    reason: str | None = None


class MachinesResponse(BaseModel):
    as_of: dt.datetime
    machines: list[MachineStatus]


class DowntimeEvent(BaseModel):
    event_id: str
    machine_id: str
    line: str
    start: dt.datetime
    end: dt.datetime | None = None
    reason: str | None = None


class DowntimeResponse(BaseModel):
    as_of: dt.datetime
    events: list[DowntimeEvent]


class QualityReport(BaseModel):
    report_id: str
    line: str
    product: str
    period_start: dt.datetime
    period_end: dt.datetime
    inspected: int
    defects: int

    @property
    def defect_rate(self) -> float:
        return self.defects / self.inspected if self.inspected else 0.0


class QualityResponse(BaseModel):
    as_of: dt.datetime
    reports: list[QualityReport]


class ProductionOrder(BaseModel):
    order_id: str
    line: str
    material: str
    quantity: int
    status: str


class OrdersResponse(BaseModel):
    as_of: dt.datetime
    orders: list[ProductionOrder]


class MachineDetail(MachineStatus):
    """One machine as the write endpoints see it, with its hold flag."""

    hold: bool = False
    hold_reason: str | None = None


class MachineResponse(BaseModel):
    as_of: dt.datetime
    machine: MachineDetail


class WorkOrder(BaseModel):
    work_order_id: str
    machine_id: str
    line: str
    description: str
    priority: str
    status: str
    created_at: dt.datetime


class WorkOrderResponse(BaseModel):
    work_order: WorkOrder


class WorkOrdersResponse(BaseModel):
    as_of: dt.datetime
    work_orders: list[WorkOrder]


class WriteResult(BaseModel):
    """What a write returned, and whether the MES answered a repeated Idempotency-Key (nothing written)."""

    body: dict[str, Any]
    replayed: bool = False


class MESClient:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.2,
                 api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @classmethod
    def from_tenant(cls, cfg: dict[str, Any]) -> MESClient:
        """From a tenant's `mes` settings (base_url, timeout_s, retries, backoff_s)."""
        return cls(str(cfg["base_url"]), timeout_s=float(cfg.get("timeout_s", 5)), retries=int(cfg.get("retries", 2)),
                   backoff_s=float(cfg.get("backoff_s", 0.2)))

    def _retrying(self, path: str, send: Callable[[], httpx.Response], accept: Callable[[httpx.Response], T]) -> T:
        """`accept(send())`, retried with exponential backoff on timeouts, connection errors and 5xx; `accept`
        decides (or raises) for every other status."""
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = send()
                if resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                else:
                    return accept(resp)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s}s"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2**attempt))
        raise MESError(f"MES {path}: {last} (after {self.retries + 1} attempts)", code="mes_unavailable")

    def _get(self, path: str, model: type[BaseModel], params: dict | None = None) -> Any:
        def accept(resp: httpx.Response) -> BaseModel:
            if resp.status_code != 200:
                raise MESError(f"MES {path}: HTTP {resp.status_code}", code="mes_bad_response")
            return _validated(path, model, resp.content)

        return self._retrying(path, lambda: httpx.get(f"{self.base_url}{path}", params=params, headers=self._headers,
                                                      timeout=self.timeout_s), accept)

    def machine_status(self) -> MachinesResponse:
        return self._get("/api/v1/machines", MachinesResponse)

    def downtime_events(self, since: dt.datetime | None = None) -> DowntimeResponse:
        return self._get("/api/v1/downtime-events", DowntimeResponse, {"since": since.isoformat()} if since else None)

    def quality_reports(self, since: dt.datetime | None = None) -> QualityResponse:
        return self._get("/api/v1/quality-reports", QualityResponse, {"since": since.isoformat()} if since else None)

    def production_orders(self) -> OrdersResponse:
        return self._get("/api/v1/production-orders", OrdersResponse)

    # ------------------------------------------------------------------ reads for writes, and writes

    def machine(self, machine_id: str) -> tuple[MachineDetail, str]:
        """One machine and its ETag (the precondition of a write to it)."""
        path = f"/api/v1/machines/{machine_id}"
        try:
            resp = httpx.get(f"{self.base_url}{path}", headers=self._headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise MESError(f"MES {path}: timed out after {self.timeout_s}s", code="mes_unavailable") from None
        except httpx.TransportError as exc:
            raise MESError(f"MES {path}: connection failed ({type(exc).__name__})", code="mes_unavailable") from None
        if resp.status_code == 404:
            raise MESError(f"MES has no machine {machine_id!r}", code="mes_not_found")
        if resp.status_code != 200:
            raise MESError(f"MES {path}: HTTP {resp.status_code}",
                           code="mes_unavailable" if resp.status_code >= 500 else "mes_bad_response")
        etag = resp.headers.get("ETag")
        parsed = _validated(path, MachineResponse, resp.content)
        if not etag:
            raise MESError(f"MES {path}: no ETag in the response", code="mes_bad_response")
        return parsed.machine, etag

    def _post(self, path: str, body: dict[str, Any], idempotency_key: str, if_match: str | None,
              model: type[BaseModel]) -> WriteResult:
        """POST with an Idempotency-Key. Transport failures and 5xx are retried with the SAME key (the MES
        answers a repeated key with the first result, so a retry cannot write twice); a 412 (the record
        changed: If-Match no longer holds) and every other 4xx are not retried."""
        headers = {**self._headers, "Idempotency-Key": idempotency_key}
        if if_match is not None:
            headers["If-Match"] = if_match

        def accept(resp: httpx.Response) -> WriteResult:
            if resp.status_code == 412:
                raise MESError(f"MES {path}: the record changed since it was read (precondition failed)",
                               code="precondition_failed")
            if resp.status_code not in (200, 201):
                raise MESError(f"MES {path}: HTTP {resp.status_code} {resp.text[:200]}", code="mes_refused")
            return WriteResult(body=_validated(path, model, resp.content).model_dump(mode="json"),
                               replayed=resp.headers.get("Idempotent-Replay") == "true")

        return self._retrying(path, lambda: httpx.post(f"{self.base_url}{path}", json=body, headers=headers,
                                                       timeout=self.timeout_s), accept)

    def create_work_order(self, machine_id: str, description: str, priority: str, *, idempotency_key: str,
                          if_match: str | None = None, requested_by: str | None = None) -> WriteResult:
        """Open a maintenance work order for a machine."""
        return self._post("/api/v1/work-orders", {"machine_id": machine_id, "description": description,
                                                  "priority": priority, "requested_by": requested_by},
                          idempotency_key, if_match, WorkOrderResponse)

    def set_hold(self, machine_id: str, hold: bool, reason: str | None, *, idempotency_key: str,
                 if_match: str) -> WriteResult:
        """Put a machine on hold (or release it); refused with precondition_failed if it changed since `if_match`."""
        return self._post(f"/api/v1/machines/{machine_id}/hold", {"hold": hold, "reason": reason}, idempotency_key,
                          if_match, MachineResponse)

    def work_orders(self) -> WorkOrdersResponse:
        return self._get("/api/v1/work-orders", WorkOrdersResponse)
