"""FastAPI app factory: `uvicorn --factory serving.app:create_app`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import psycopg
import sqlalchemy as sa
from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from compliance import audit
from core.db.database import dispose_engines
from core.errors import PlatformError
from core.logging import configure_logging
from core.settings import get_settings
from serving import deps, errors, mcp, metrics
from serving.routes import (
    admin,
    alerts,
    auth,
    chat,
    compliance,
    documents,
    evals,
    feedback,
    gdpr,
    goals,
    health,
    index,
    me,
    memories,
    openai_compat,
    operations,
    reviews,
    search,
    usage,
    web,
)
from serving.routes import audit as audit_routes

log = logging.getLogger(__name__)

# Paths served without a token; everything else is authenticated before its body is read.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/v1/auth/login", "/metrics", "/v1/auth/config"})
# SAML metadata and assertion consumer (per tenant): the IdP's signed assertion is the credential there.
PUBLIC_PREFIXES = ("/v1/auth/saml/",)
UPLOAD_ROUTES = frozenset({("POST", "/v1/documents")})
MULTIPART_OVERHEAD = 64 * 1024  # form framing and fields around an uploaded file
NUL_MESSAGE = "text cannot contain NUL (0x00) characters"  # PostgreSQL text cannot hold them


def _nul_locations(value: object, loc: list, found: list) -> None:
    """Where in a parsed JSON body a string (or a key) holds a NUL character."""
    if len(found) >= 20:
        return
    if isinstance(value, str):
        if "\x00" in value:
            found.append(loc)
    elif isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                found.append([*loc, k])
            _nul_locations(v, [*loc, k], found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _nul_locations(v, [*loc, i], found)


def _invalid(problems: list[tuple[list, str, str]]) -> tuple[int, str, str, dict]:
    """The validation error shape of serving.errors, for refusals made before FastAPI validates."""
    return 422, "validation_error", "request validation failed", {
        "errors": [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in problems]}


def _input_error(exc: BaseException) -> tuple[int, str, str, dict] | None:
    """A database refusal caused by a value the client sent: PostgreSQL text cannot hold NUL, and a
    number beyond the column's type (an offset of 10^30) is out of range. Both are 422s."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if "NUL (0x00)" in str(orig):
        return _invalid([([], NUL_MESSAGE, "nul_byte")])
    if isinstance(orig, (psycopg.errors.NumericValueOutOfRange, psycopg.errors.InvalidDatetimeFormat,
                         psycopg.errors.DatetimeFieldOverflow)) \
            or (isinstance(orig, psycopg.DataError) and "out of range" in str(orig)):
        return _invalid([([], "a value in the request is out of range", "value_out_of_range")])
    return None


class RequestGuard:
    """Pure ASGI middleware in front of every route:

    - authenticates non-public requests *before* their body is read (a 400 MB upload without a
      valid token is refused with 401 without a byte of it being read or spooled to disk);
    - bounds bodies: Content-Length over the route's limit → 413 at once; chunked bodies are
      counted and cut off at the limit (413);
    - refuses NUL bytes in the path, the query string and JSON strings (422 `nul_byte`: PostgreSQL
      text cannot store them); a NUL the database rejects later is mapped to the same answer;
    - turns any unhandled exception into the JSON 500 of `serving.errors` *without* re-raising, so
      the server does not reset the connection, and ends a started response cleanly.
    """

    def __init__(self, app: ASGIApp, exception_handlers: dict, routes: list) -> None:
        self.app = app
        self.handlers = exception_handlers
        self.routes = routes

    def _routed(self, scope: Scope) -> bool:
        """A route exists for this path (an unknown path stays a 404, whoever asks). The web app's catch-all
        (serving/routes/web.py) does not count: a path only it matches is the app's page or file, public."""
        return any(r.matches(scope)[0] != Match.NONE for r in self.routes if not isinstance(r, web.SpaRoute))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = replied = False

        async def reply(status: int, code: str, message: str, details: dict | None = None,
                        headers: dict | None = None) -> None:
            nonlocal replied
            if started or replied:
                return
            replied = True
            body = json.dumps(errors.error_body(code, message, details)).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]
            hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        async def guarded_send(message: Message) -> None:
            nonlocal started, finished
            if replied:
                return  # this middleware already answered (body over the limit)
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self._handle(scope, receive, guarded_send, reply)
        except Exception as exc:
            if replied:
                return
            if started:
                log.exception("error after the response started on %s %s", scope.get("method"), scope.get("path"))
                if not finished:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            refused = _input_error(exc)
            if refused is not None:
                await reply(*refused)
                return
            handler = self.handlers.get(Exception)
            if handler is None:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                await reply(500, "internal_error", "internal server error")
                return
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, reply: Callable[..., Awaitable[None]]) -> None:
        settings = get_settings()
        method, path = scope.get("method", "GET"), scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in scope.get("raw_path", b""):
            await reply(*_invalid([(["path"], NUL_MESSAGE, "nul_byte")]))
            return
        if b"%00" in query or b"\x00" in query:
            await reply(*_invalid([(["query"], NUL_MESSAGE, "nul_byte")]))
            return
        if (method, path.rstrip("/")) in UPLOAD_ROUTES:  # the upload route's own code for the same refusal
            limit, too_large = settings.max_upload_bytes + MULTIPART_OVERHEAD, "file_too_large"
        else:
            limit, too_large = settings.max_json_body_bytes, "request_too_large"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await reply(400, "bad_content_length", "Content-Length must be a number")
                return
            if int(length) > limit:
                await reply(413, too_large, f"request body exceeds the limit of {limit} bytes",
                            {"limit_bytes": limit})
                return
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES) and self._routed(scope):
            try:
                principal = await anyio.to_thread.run_sync(deps.authenticate, settings,
                                                           headers.get("authorization"), path)
            except PlatformError as exc:
                await errors.audit_denial(scope, exc.status_code, exc.code)
                await reply(exc.status_code, exc.code, exc.message, exc.details,
                            {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None)
                return
            scope.setdefault("state", {})["principal"] = principal
            audit.bind_actor(principal.tenant_id, principal.subject, principal.role.value)

        received = 0
        over = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    await reply(413, too_large, f"request body exceeds the limit of {limit} bytes",
                                {"limit_bytes": limit})
                    return {"type": "http.disconnect"}
            return message

        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            chunks: list[bytes] = []
            while True:
                message = await counted_receive()
                if message["type"] != "http.request":
                    return  # disconnected, or over the limit (answered)
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            if b"\\u0000" in body or b"\x00" in body:
                found: list = []
                try:
                    _nul_locations(json.loads(body), ["body"], found)
                except ValueError:
                    pass  # not JSON: FastAPI's own validation answers
                if found:
                    await reply(*_invalid([(loc, NUL_MESSAGE, "nul_byte") for loc in found]))
                    return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, counted_receive, send)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with _app.state.mcp.running():  # the MCP server's session manager (serving/mcp.py)
        yield
    dispose_engines()


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="Enterprise Agent Platform",
        version="0.1.0",
        lifespan=lifespan,
        description="Grounded, cited answers over manufacturing documents and systems.",
    )
    errors.install(app)
    app.add_middleware(RequestGuard, exception_handlers=app.exception_handlers, routes=app.router.routes)
    # Outermost: the request id and the request metrics cover the guard's own refusals too.
    app.add_middleware(metrics.RequestContext)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for router in (auth.router, me.router, documents.router, search.router, chat.router, alerts.router,
                   usage.router, feedback.router, evals.router, memories.router, goals.router, index.router,
                   reviews.router, admin.router):
        app.include_router(router, responses=errors.ERROR_RESPONSES)
    app.include_router(compliance.router, responses=errors.ERROR_RESPONSES)
    app.include_router(operations.router, responses=errors.ERROR_RESPONSES)
    app.include_router(audit_routes.router, responses=errors.ERROR_RESPONSES)
    app.include_router(gdpr.router, responses=errors.ERROR_RESPONSES)
    app.include_router(openai_compat.router, responses=errors.ERROR_RESPONSES)
    # MCP over streamable HTTP at /mcp, behind the same request guard (serving/mcp.py).
    app.state.mcp = mcp.build(lambda: app.dependency_overrides.get(deps.get_model, deps.get_model)())
    app.router.routes.append(mcp.route(app.state.mcp))
    app.include_router(web.router, responses=errors.ERROR_RESPONSES)
    web.install(app)  # keep last: the web app answers every GET outside /v1 no other route takes
    return app
