"""A MES simulator speaking the same REST API as connectors/mes.py expects, for demos and tests.

Deterministic by seed (machines, lines, orders, defect counts), with a simulated clock and
controls: force a machine down, raise a line's defect rate, make responses slow, or return
garbage. Runs on a loopback port in a background thread:

    sim = MESSimulator(seed=7).start()     # sim.url -> http://127.0.0.1:PORT
    sim.force_down("M-3", reason="hydraulic pressure loss"); sim.advance(minutes=31)
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

EPOCH = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)


@dataclass
class Machine:
    machine_id: str
    line: str
    name: str
    state: str = "RUNNING"
    since: dt.datetime = EPOCH
    reason: str | None = None


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


class MESSimulator:
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
        raise KeyError(path)

    def start(self) -> MESSimulator:
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sim.state.requests += 1
                if sim.state.delay_s:
                    time.sleep(sim.state.delay_s)
                url = urlparse(self.path)
                if sim.state.garbage:
                    body = b'{"machines": [{"machine_id": 17, "state": "EXPLODED"'  # truncated, wrong types
                    status = 200
                else:
                    try:
                        with sim._lock:
                            body = json.dumps(sim._payload(url.path, parse_qs(url.query))).encode()
                        status = 200
                    except KeyError:
                        body, status = b'{"error": "not found"}', 404
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="mes-sim").start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
