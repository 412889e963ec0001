"""The MCP server: the platform's search, document lookup, chat and operational reads as MCP tools for agent
tools (Claude Desktop, IDE agents, LangChain's MCP adapters), over streamable HTTP at `/mcp`.

Authentication and access control are the REST API's: the request guard (serving/app.py) authenticates every
POST to /mcp with the platform's bearer token (or API key) before the MCP layer sees it, and each tool calls
the same function as its REST route with the caller's principal — the retrieval access filter, the document
visibility rule, the chat use case (VERIFY, guards, audit) and the audit records are unchanged. Stateless
(no MCP session state between requests) with JSON responses: every call stands alone, like a REST call.
DNS-rebinding protection (a browser defence for unauthenticated local servers) is off: no request is served
without a bearer token.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agents import chat as chat_case
from compliance import audit
from core.db.database import tenant_session
from core.errors import PlatformError, Unauthorized
from core.llm import Model
from core.security import Principal
from serving.errors import error_body
from serving.routes.alerts import list_alerts
from serving.routes.chat import _open_deps
from serving.routes.documents import _get_visible, _out
from serving.routes.search import FiltersIn, SearchIn, run_search

PATH = "/mcp"
INSTRUCTIONS = ("Grounded answers and search over the manufacturing documents the caller may read. Every result "
                "is limited to what the token's user may see; answers cite document and chunk.")


def _principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = getattr(request.state, "principal", None) if isinstance(request, Request) else None
    if not isinstance(principal, Principal):  # the guard authenticates every /mcp request; never reached
        raise Unauthorized("the MCP request carries no authenticated principal", code="missing_token")
    return principal


async def _as(principal: Principal, fn: Any, *args: Any) -> Any:
    """Run `fn` in a worker thread with the caller bound as the audit actor (records of failures deep inside)."""
    def bound() -> Any:
        token = audit.bind_actor(principal.tenant_id, principal.subject, principal.role.value)
        try:
            return fn(*args)
        finally:
            audit.unbind_actor(token)

    try:
        return await anyio.to_thread.run_sync(bound)
    except PlatformError as exc:  # the REST API's refusal, as a tool error the client can read
        raise ToolError(f"{exc.code}: {exc.message}") from None
    except ValueError as exc:  # a malformed id or argument
        raise ToolError(f"invalid_input: {exc}") from None


def build(model_of: Any) -> McpEndpoint:
    """The MCP server's /mcp endpoint; `model_of()` gives the Model seam of a request (the API's dependency, so
    tests that script the model script it here too)."""
    server = MCPServer("enterprise-agent-platform", instructions=INSTRUCTIONS, version="0.1.0")

    @server.tool()
    async def search(query: str, ctx: Context, k: int = 8) -> dict[str, Any]:
        """Hybrid search over the documents you may read. Returns passages with document, chunk, page and
        classification."""
        principal = _principal(ctx)

        def run() -> dict[str, Any]:
            with tenant_session(principal.tenant_id) as s:
                return run_search(s, principal, SearchIn(query=query, k=k)).model_dump(mode="json")

        result: dict[str, Any] = await _as(principal, run)
        return result

    @server.tool()
    async def get_document(document_id: str, ctx: Context, query: str | None = None, k: int = 5) -> dict[str, Any]:
        """A document's metadata (title, class, status, review); with `query`, its best matching passages. A
        document you may not read is answered exactly like one that does not exist."""
        principal = _principal(ctx)

        def run() -> dict[str, Any]:
            doc_id = uuid.UUID(document_id)
            with tenant_session(principal.tenant_id) as s:
                out: dict[str, Any] = {"document": _out(_get_visible(s, principal, doc_id)).model_dump(mode="json")}
                if query:
                    only = FiltersIn(document_ids=[doc_id])
                    hits = run_search(s, principal, SearchIn(query=query, k=k, filters=only))
                    out["passages"] = hits.model_dump(mode="json")["hits"]
                return out

        result: dict[str, Any] = await _as(principal, run)
        return result

    @server.tool()
    async def ask(question: str, ctx: Context, conversation_id: str | None = None) -> dict[str, Any]:
        """Ask the platform's agents: a grounded, verified answer with citations (the same use case as the chat
        API, audited as channel "mcp")."""
        principal = _principal(ctx)
        model: Model = model_of()

        def run() -> dict[str, Any]:
            conv = uuid.UUID(conversation_id) if conversation_id else None
            res = chat_case.ask(_open_deps(principal, model), question[:4000], conv, channel="mcp")
            d = res.as_dict()
            return {k2: d[k2] for k2 in ("answer", "citations", "conversation_id", "message_id", "specialist",
                                         "model_tier", "outcome", "ai_disclosure", "retrieval_notes")}

        result: dict[str, Any] = await _as(principal, run)
        return result

    @server.tool()
    async def alerts(ctx: Context, status: Literal["open", "acknowledged", "resolved"] | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
        """Recent MES alerts of your tenant (open, acknowledged or resolved), with root-cause drafts — the
        operational read of GET /v1/alerts, for every role that may call it."""
        principal = _principal(ctx)

        def run() -> list[dict[str, Any]]:
            with tenant_session(principal.tenant_id) as s:
                return [a.model_dump(mode="json") for a in list_alerts(s, status, max(1, min(limit, 500)))]

        result: list[dict[str, Any]] = await _as(principal, run)
        return result

    return McpEndpoint(server)


class McpEndpoint:
    """The ASGI endpoint at /mcp. The SDK's session manager runs once per instance, and an app's lifespan may run
    more than once (a test client per test): each `running()` builds the streamable-HTTP app afresh."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.app: Starlette | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        app = self.server.streamable_http_app(
            streamable_http_path=PATH, json_response=True, stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        async with self.server.session_manager.run():
            self.app = app
            try:
                yield
            finally:
                self.app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:  # the app's lifespan has not started (or has ended)
            await JSONResponse(error_body("service_unavailable", "the MCP server is not running"),
                               status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def route(endpoint: McpEndpoint) -> Route:
    """The /mcp route, behind the app's request guard like every other route."""
    return Route(PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"])
