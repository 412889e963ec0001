"""A MES simulator speaking the same REST API as connectors/mes.py expects, for demos and tests.

Deterministic by seed (machines, lines, orders, defect counts), with a simulated clock and
controls: force a machine down, raise a line's defect rate, make responses slow, or return
garbage. Runs on a loopback port in a background thread:

    sim = MESSimulator(seed=7).start()     # sim.url -> http://127.0.0.1:PORT
    sim.force_down("M-3", reason="hydraulic pressure loss"); sim.advance(minutes=31)

Writes (the approved-operations path, operations/targets.py): `GET /api/v1/machines/{id}` answers with an
ETag; `POST /api/v1/machines/{id}/hold` (If-Match required) and `POST /api/v1/work-orders` (If-Match of the
machine optional) need an `Idempotency-Key`: a key seen before answers the first result again and writes
nothing. A stale If-Match gets 412. `sim.applied_writes` counts the writes that changed something.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from connectors.loopback import LoopbackHTTPService

EPOCH = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)


@dataclass
class Machine:
    machine_id: str
    line: str
    name: str
    state: str = "RUNNING"
    since: dt.datetime = EPOCH
    reason: str | None = None
    hold: bool = False
    hold_reason: str | None = None

    def as_dict(self) -> dict:
        return {"machine_id": self.machine_id, "line": self.line, "name": self.name, "state": self.state,
                "since": self.since.isoformat(), "reason": self.reason, "hold": self.hold,
                "hold_reason": self.hold_reason}

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:20] + '"'


@dataclass
class SimState:
    now: dt.datetime = EPOCH
    machines: dict[str, Machine] = field(default_factory=dict)
    downtime: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    defect_rate: dict[str, float] = field(default_factory=dict)
    delay_s: float = 0.0
    garbage: bool = False
    requests: int = 0
    work_orders: list[dict] = field(default_factory=list)
    idempotency: dict[str, tuple[int, dict]] = field(default_factory=dict)
    applied_writes: int = 0


class MESSimulator(LoopbackHTTPService):
    def __init__(self, seed: int = 7, lines: int = 3, machines_per_line: int = 3) -> None:
        rng = random.Random(seed)  # noqa: S311 - deterministic simulation data, not security
        self.state = SimState()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        kinds = ["Press", "Welding robot", "CNC mill", "Paint booth", "Assembly cell"]
        n = 0
        for li in range(1, lines + 1):
            line = f"L{li}"
            self.state.defect_rate[line] = round(rng.uniform(0.008, 0.03), 4)
            for _ in range(machines_per_line):
                n += 1
                mid = f"M-{n}"
                self.state.machines[mid] = Machine(mid, line, f"{rng.choice(kinds)} {mid}")
            for o in range(2):
                self.state.orders.append({
                    "order_id": f"PO-{li}{o:03d}", "line": line, "material": f"MAT-{rng.randint(1000, 9999)}",
                    "quantity": rng.randint(200, 2000), "status": "IN_PROGRESS" if o == 0 else "RELEASED",
                })
        self._seq = 0

    # ------------------------------------------------------------------ controls

    def force_down(self, machine_id: str, reason: str = "unplanned stop") -> None:
        with self._lock:
            m = self.state.machines[machine_id]
            m.state, m.since, m.reason = "DOWN", self.state.now, reason
            self._seq += 1
            self.state.downtime.append({"event_id": f"DT-{self._seq:05d}", "machine_id": machine_id, "line": m.line,
                                        "start": m.since.isoformat(), "end": None, "reason": reason})

    def restore(self, machine_id: str) -> None:
        with self._lock:
            m = self.state.machines[machine_id]
            for ev in self.state.downtime:
                if ev["machine_id"] == machine_id and ev["end"] is None:
                    ev["end"] = self.state.now.isoformat()
            m.state, m.since, m.reason = "RUNNING", self.state.now, None

    def set_defect_rate(self, line: str, rate: float) -> None:
        with self._lock:
            self.state.defect_rate[line] = rate

    def advance(self, minutes: float) -> None:
        """Move the clock; a quality report is produced per line for every full hour passed."""
        with self._lock:
            start = self.state.now
            self.state.now = start + dt.timedelta(minutes=minutes)
            hour = start.replace(minute=0, second=0, microsecond=0)
            while hour + dt.timedelta(hours=1) <= self.state.now:
                for line, rate in self.state.defect_rate.items():
                    inspected = 400
                    self._seq += 1
                    self.state.quality.append({
                        "report_id": f"QR-{self._seq:05d}", "line": line, "product": f"BR-{200 + int(line[1:])}",
                        "period_start": hour.isoformat(), "period_end": (hour + dt.timedelta(hours=1)).isoformat(),
                        "inspected": inspected, "defects": round(inspected * rate),
                    })
                hour += dt.timedelta(hours=1)

    def slow(self, seconds: float) -> None:
        self.state.delay_s = seconds

    def set_garbage(self, on: bool = True) -> None:
        self.state.garbage = on

    @property
    def applied_writes(self) -> int:
        return self.state.applied_writes

    # ------------------------------------------------------------------ writes

    def _write(self, path: str, body: dict, headers: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        """(status, body, headers) of one write, under the lock."""
        st = self.state
        key = headers.get("idempotency-key", "")
        if not key or len(key) > 200:
            return 400, {"error": "Idempotency-Key header required"}, {}
        if key in st.idempotency:
            status, previous = st.idempotency[key]
            return status, previous, {"Idempotent-Replay": "true"}
        if_match = headers.get("if-match")
        if path == "/api/v1/work-orders":
            machine = st.machines.get(str(body.get("machine_id")))
            description = body.get("description")
            if machine is None:
                return 404, {"error": "unknown machine"}, {}
            if not isinstance(description, str) or not description.strip():
                return 422, {"error": "description required"}, {}
            if if_match is not None and if_match != machine.etag:
                return 412, {"error": "machine changed", "etag": machine.etag}, {}
            self._seq += 1
            wo = {"work_order_id": f"WO-{self._seq:05d}", "machine_id": machine.machine_id, "line": machine.line,
                  "description": description.strip(), "priority": str(body.get("priority") or "normal"),
                  "status": "OPEN", "created_at": st.now.isoformat(), "requested_by": str(body.get("requested_by"))}
            st.work_orders.append(wo)
            result: tuple[int, dict] = (201, {"work_order": wo})
        elif path.startswith("/api/v1/machines/") and path.endswith("/hold"):
            machine = st.machines.get(path.split("/")[4])
            if machine is None:
                return 404, {"error": "unknown machine"}, {}
            if if_match is None:
                return 428, {"error": "If-Match required"}, {}
            if if_match != machine.etag:
                return 412, {"error": "machine changed", "etag": machine.etag}, {}
            hold = bool(body.get("hold", True))
            machine.hold, machine.hold_reason = hold, (str(body.get("reason") or "") or None) if hold else None
            result = (200, {"as_of": st.now.isoformat(), "machine": machine.as_dict()})
        else:
            return 404, {"error": "not found"}, {}
        st.applied_writes += 1
        st.idempotency[key] = result
        return result[0], result[1], {}

    # ------------------------------------------------------------------ HTTP

    def _payload(self, path: str, query: dict) -> dict | list:
        st = self.state
        since = query.get("since", [None])[0]
        if path == "/api/v1/machines":
            return {"as_of": st.now.isoformat(), "machines": [
                {"machine_id": m.machine_id, "line": m.line, "name": m.name, "state": m.state,
                 "since": m.since.isoformat(), "reason": m.reason} for m in st.machines.values()]}
        if path == "/api/v1/downtime-events":
            evs = [e for e in st.downtime if since is None or (e["end"] or e["start"]) >= since or e["end"] is None]
            return {"as_of": st.now.isoformat(), "events": evs}
        if path == "/api/v1/quality-reports":
            reps = [r for r in st.quality if since is None or r["period_end"] > since]
            return {"as_of": st.now.isoformat(), "reports": reps}
        if path == "/api/v1/production-orders":
            return {"as_of": st.now.isoformat(), "orders": st.orders}
        if path == "/api/v1/work-orders":
            return {"as_of": st.now.isoformat(), "work_orders": st.work_orders}
        if path.startswith("/api/v1/machines/") and path.count("/") == 4:
            return {"as_of": st.now.isoformat(), "machine": st.machines[path.split("/")[4]].as_dict()}
        raise KeyError(path)

    def start(self) -> MESSimulator:
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sim.state.requests += 1
                if sim.state.delay_s:
                    time.sleep(sim.state.delay_s)
                url = urlparse(self.path)
                etag: str | None = None
                if sim.state.garbage:
                    body = b'{"machines": [{"machine_id": 17, "state": "EXPLODED"'  # truncated, wrong types
                    status = 200
                else:
                    try:
                        with sim._lock:
                            payload = sim._payload(url.path, parse_qs(url.query))
                            if isinstance(payload, dict) and "machine" in payload:
                                etag = sim.state.machines[payload["machine"]["machine_id"]].etag
                        body = json.dumps(payload).encode()
                        status = 200
                    except KeyError:
                        body, status = b'{"error": "not found"}', 404
                self._reply(status, body, {"ETag": etag} if status == 200 and etag else {})

            def do_POST(self) -> None:
                sim.state.requests += 1
                if sim.state.delay_s:
                    time.sleep(sim.state.delay_s)
                try:
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    body = json.loads(raw or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self._reply(400, b'{"error": "invalid JSON"}', {})
                    return
                if sim.state.garbage:
                    self._reply(200, b'{"work_order": {"work_order_id": 17', {})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                with sim._lock:
                    status, out, extra = sim._write(urlparse(self.path).path, body, headers)
                self._reply(status, json.dumps(out).encode(), extra)

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler, "mes-sim")
        return self
