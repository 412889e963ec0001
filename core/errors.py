"""Error types shared by every layer.

`PlatformError` carries a machine-readable `code` and a one-line human message; the CLI prints
the message without a traceback and the API turns it into the JSON error shape.
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    code = "platform_error"
    status_code = 500

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class ConfigurationError(PlatformError):
    code = "configuration_error"


class DatabaseUnavailable(PlatformError):
    code = "database_unavailable"
    status_code = 503


class NotFound(PlatformError):
    code = "not_found"
    status_code = 404


class Conflict(PlatformError):
    code = "conflict"
    status_code = 409


class InvalidInput(PlatformError):
    code = "invalid_input"
    status_code = 422


class Unauthorized(PlatformError):
    code = "unauthorized"
    status_code = 401


class Forbidden(PlatformError):
    code = "forbidden"
    status_code = 403
