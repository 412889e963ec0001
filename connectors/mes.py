"""MES REST read connector: typed, validated, with timeouts and retries.

Every response is validated with pydantic; a garbage or partial response is an error (MESError),
never data. Transient failures (timeouts, connection errors, 5xx) are retried with exponential
backoff; the caller sees one error with a one-line reason.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ValidationError

from core.errors import PlatformError


class MESError(PlatformError):
    code = "mes_unavailable"
    status_code = 502


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


class MESClient:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.2,
                 api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _get(self, path: str, model: type[BaseModel], params: dict | None = None) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = httpx.get(f"{self.base_url}{path}", params=params, headers=self._headers,
                                 timeout=self.timeout_s)
                if resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                elif resp.status_code != 200:
                    raise MESError(f"MES {path}: HTTP {resp.status_code}", code="mes_bad_response")
                else:
                    try:
                        return model.model_validate_json(resp.content)
                    except ValidationError as exc:
                        first = exc.errors()[0]
                        raise MESError(
                            f"MES {path}: invalid response ({first['type']} at {'.'.join(map(str, first['loc']))})",
                            code="mes_bad_response",
                        ) from None
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s}s"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            if attempt < self.retries:
                time.sleep(self.backoff_s * (2**attempt))
        raise MESError(f"MES {path}: {last} (after {self.retries + 1} attempts)", code="mes_unavailable")

    def machine_status(self) -> MachinesResponse:
        return self._get("/api/v1/machines", MachinesResponse)

    def downtime_events(self, since: dt.datetime | None = None) -> DowntimeResponse:
        return self._get("/api/v1/downtime-events", DowntimeResponse, {"since": since.isoformat()} if since else None)

    def quality_reports(self, since: dt.datetime | None = None) -> QualityResponse:
        return self._get("/api/v1/quality-reports", QualityResponse, {"since": since.isoformat()} if since else None)

    def production_orders(self) -> OrdersResponse:
        return self._get("/api/v1/production-orders", OrdersResponse)
