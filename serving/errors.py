"""One JSON error shape for every failure: {"error": {"code", "message", "details"}}.

Every denial (401, 403, 404, 429) is also an audit record, `access.denied` with outcome `denied`
(status, code, method, path, client): in the caller's tenant chain when the request carries valid
credentials, otherwise in the platform chain (tenant NULL, readable by the owner role only) — a
request without valid credentials has no tenant one could trust, and writing it into the tenant a
forged token names would let anyone append to any tenant's log.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import MutableMapping
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from compliance import audit, holds
from core.errors import PlatformError
from core.security import Principal

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict | list = {}


class ErrorOut(BaseModel):
    """The one error shape of this API."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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


AUDITED_DENIALS = frozenset({401, 403, 404, 429})


def _principal_of(scope: MutableMapping[str, Any]) -> Principal | None:
    """The principal the request guard authenticated, or None. Only an already-verified principal
    counts: a denial is never attributed to a tenant on the say-so of unverified claims."""
    state = scope.get("state") or {}
    principal = state.get("principal") if isinstance(state, dict) else getattr(state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def _denial_event(scope: MutableMapping[str, Any], status: int, code: str,
                  principal: Principal | None) -> tuple[uuid.UUID | None, dict]:
    client = scope.get("client")
    path = str(scope.get("path", ""))[:300]
    event = {
        "actor": principal.subject if principal else "anonymous",
        "actor_role": principal.role.value if principal else None,
        "action": "access.denied",
        "resource_type": "http",
        "resource_id": f"{scope.get('method', '')} {path}",
        "outcome": "denied",
        "details": {"status": status, "code": code, "client": client[0] if client else None},
    }
    return (principal.tenant_id if principal else None), event


async def audit_denial(scope: MutableMapping[str, Any], status: int, code: str,
                       principal: Principal | None = None) -> None:
    """Record a 401/403/404/429 answer (own transaction: it survives the request's rollback; never
    raises). Called by the exception handlers below and by the request guard (serving/app.py) for the
    401s it answers before routing."""
    if status not in AUDITED_DENIALS:
        return
    tenant_id, event = _denial_event(scope, status, code, principal or _principal_of(scope))
    await anyio.to_thread.run_sync(functools.partial(audit.record_detached, tenant_id, **event))


def install(app: FastAPI) -> None:
    @app.exception_handler(PlatformError)
    async def _platform(req: Request, exc: PlatformError) -> JSONResponse:
        await audit_denial(req.scope, exc.status_code, exc.code)
        if isinstance(exc, holds.HeldError) and (who := _principal_of(req.scope)) is not None:
            # 409 `held`: a delete or erasure a destruction hold refused is an audit record too (compliance/holds.py).
            await anyio.to_thread.run_sync(functools.partial(
                holds.record_refusal, exc, tenant_id=who.tenant_id, actor=who.subject, actor_role=who.role.value,
                resource_id=f"{req.scope.get('method', '')} {str(req.scope.get('path', ''))[:300]}"))
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
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        await audit_denial(req.scope, exc.status_code, code)
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), 500)
