"""One JSON error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import PlatformError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict | list = {}


class ErrorOut(BaseModel):
    """The one error shape of this API."""

    error: ErrorDetail


ERROR_RESPONSES = {
    status: {"model": ErrorOut, "description": desc}
    for status, desc in {
        401: "missing, invalid or expired credentials",
        403: "authenticated but not allowed",
        404: "not found (or not visible to you)",
        413: "upload too large",
        415: "unsupported or mismatched file type",
        422: "invalid request",
        423: "account locked",
        429: "rate limit exceeded (see Retry-After)",
        502: "a model or embedding endpoint failed",
        503: "database unavailable",
    }.items()
}


def error_body(code: str, message: str, details: dict | list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def install(app: FastAPI) -> None:
    @app.exception_handler(PlatformError)
    async def _platform(_req: Request, exc: PlatformError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.status_code == 429 and "retry_after_s" in exc.details:
            headers = {"Retry-After": str(exc.details["retry_after_s"])}
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("validation_error", "request validation failed", {"errors": problems}), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), 500)
