"""The loopback HTTP server the simulators (MES, SAP) run on: a threading server on 127.0.0.1 (a free port)
serving from a daemon thread, with its URL and an idempotent stop."""

from __future__ import annotations

import http.server
import threading


class LoopbackHTTPService:
    """Mixin: `_serve(Handler, name)` starts the server; `url` and `stop()` as every simulator offers them."""

    _server: http.server.ThreadingHTTPServer | None = None

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler], name: str) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name=name).start()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
