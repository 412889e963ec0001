"""The web app: the single-page app built from frontend/ (React + Vite, by scripts/install.sh) served at `/`,
and the two small reads it needs that the rest of the API does not offer.

- `GET /` and every other path outside `/v1` that is not a file of the build → `index.html` (the app routes
  in the browser); `/assets/*` are the build's content-hashed files (cached for a year). Node is needed to
  build, never to serve. No token is needed to load the app: it holds no data; every `/v1` call it makes
  carries the user's bearer token. `/v1` paths never reach this router, so an unknown API path stays the
  JSON 404 of serving.errors.
- `GET /v1/auth/config` (public): which sign-in methods the page offers — OIDC authorization code with PKCE
  when an identity provider is configured, break-glass password/TOTP, a pasted token outside production.
- `GET /v1/passages/{chunk_id}`: the text of one cited passage with its document title, page, section and
  classification, under the access rule of search (role ceiling, need-to-know groups, Class IV approval);
  Class III/IV reads are audited like search hits.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from compliance import audit
from compliance.access import can_read
from compliance.classification import CLASS_LABELS, CLASS_NAMES
from core.errors import NotFound
from core.repos import chunks
from core.settings import Settings
from serving.deps import PrincipalDep, SettingsDep, TenantSessionDep
from serving.errors import error_body
from serving.routes.search import PassageFields

router = APIRouter(prefix="/v1", tags=["web"])

API_PREFIX = "/v1"
ASSET_CACHE = "public, max-age=31536000, immutable"  # Vite names assets by content hash
BUILD_HINT = "cd frontend && npm ci && npm run build   (or scripts/install.sh, which does it when Node 20+ is present)"


# --------------------------------------------------------------------------- API reads


class OidcConfigOut(BaseModel):
    enabled: bool
    authorization_endpoint: str | None
    token_endpoint: str | None
    client_id: str | None
    scope: str


class AuthConfigOut(BaseModel):
    oidc: OidcConfigOut
    password_login: bool  # POST /v1/auth/login (break-glass accounts; TOTP for admins)
    token_paste: bool  # a token printed by `eap up` / `eap token` (not offered in production)


def _oidc_enabled(s: Settings) -> bool:
    return bool(s.oidc_client_id and s.oidc_authorization_endpoint and s.oidc_token_endpoint
                and (s.jwks_url or s.jwks_local_path))


@router.get("/auth/config", response_model=AuthConfigOut)
def auth_config(settings: SettingsDep) -> AuthConfigOut:
    """How the web app may sign a user in (public: it holds no secret; the OIDC client is a public client
    that proves itself with PKCE)."""
    enabled = _oidc_enabled(settings)
    return AuthConfigOut(
        oidc=OidcConfigOut(enabled=enabled,
                           authorization_endpoint=settings.oidc_authorization_endpoint if enabled else None,
                           token_endpoint=settings.oidc_token_endpoint if enabled else None,
                           client_id=settings.oidc_client_id if enabled else None, scope=settings.oidc_scope),
        password_login=settings.accept_platform_tokens,
        token_paste=settings.accept_platform_tokens and settings.env != "prod")


class PassageOut(PassageFields):
    classification_label: str  # General | Confidential | Critical | Restricted


@router.get("/passages/{chunk_id}", response_model=PassageOut)
def get_passage(chunk_id: uuid.UUID, principal: PrincipalDep, db: TenantSessionDep) -> PassageOut:
    """One indexed passage (a citation's `chunk_id`) if the caller may read it now; otherwise 404, the same
    answer as for a passage that does not exist (or was replaced by a newer version of its document)."""
    found = chunks.passage(db, chunk_id)
    if found is None or not can_read(principal.role.value, principal.groups, found.chunk.classification,
                                     found.chunk.acl_groups, found.review_status):
        raise NotFound("passage not found", code="passage_not_found")
    c = found.chunk
    if c.classification >= 3:  # Class III/IV: every access is its own audit record (as for search hits)
        audit.record(db, tenant_id=principal.tenant_id, actor=principal.subject, actor_role=principal.role.value,
                     action="chunk.access", resource_type="chunk", resource_id=str(c.id),
                     details={"document_id": str(c.document_id), "class": CLASS_NAMES[c.classification],
                              "via": "passage"})
    return PassageOut(chunk_id=c.id, document_id=c.document_id, title=found.title, text=c.text, page=c.page,
                      section=c.section, classification=CLASS_NAMES[c.classification],
                      classification_label=CLASS_LABELS[c.classification])


# --------------------------------------------------------------------------- the single-page app


class SpaRoute(APIRoute):
    """Matches every path outside /v1 (the API keeps its own 404s). The request guard treats a path only this
    route matches as public (serving/app.py): the app's files carry no data."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return Match.NONE, {}
        return super().matches(scope)


def dist_dir(settings: Settings) -> Path:
    return (settings.web_dist or Path(__file__).resolve().parents[2] / "frontend" / "dist").resolve()


@functools.cache
def _csp(token_endpoint: str | None) -> str:
    connect = "'self'"
    if token_endpoint:  # the browser exchanges the authorization code at the IdP itself
        parts = urlsplit(token_endpoint)
        connect += f" {parts.scheme}://{parts.netloc}"
    # Mantine sets styles inline (CSS variables): style-src needs 'unsafe-inline'; scripts never do.
    return (f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            f"font-src 'self'; connect-src {connect}; frame-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
            f"form-action 'self'; object-src 'none'")


def _headers(settings: Settings, cache: str) -> dict[str, str]:
    return {"Cache-Control": cache, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": _csp(settings.oidc_token_endpoint if _oidc_enabled(settings) else None)}


def _not_built(root: Path) -> HTMLResponse:
    body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Web app not built</title></head>"
            "<body><main><h1>The web app is not built</h1>"
            f"<p>This server found no <code>index.html</code> in <code>{root}</code>. Build it once with:</p>"
            f"<pre>{BUILD_HINT}</pre><p>The API itself is available under <code>/v1</code> "
            "(see <a href=\"/docs\">/docs</a>).</p></main></body></html>")
    return HTMLResponse(body, status_code=503, headers={"Cache-Control": "no-store"})


def web_app(path: str, settings: SettingsDep) -> Any:
    """A file of the build, else the app's index.html (client-side routes such as /documents)."""
    root = dist_dir(settings)
    index = root / "index.html"
    if not index.is_file():
        return _not_built(root)
    if path:
        target = (root / path).resolve()
        if target.is_relative_to(root) and target.is_file():
            cache = ASSET_CACHE if target.parent.name == "assets" else "no-cache"
            return FileResponse(target, headers=_headers(settings, cache))
        if "." in path.rsplit("/", 1)[-1]:  # a missing file (an old asset name): no page in its place
            return JSONResponse(error_body("not_found", f"no such file in the web app: /{path}"), status_code=404)
    return FileResponse(index, headers=_headers(settings, "no-cache"), media_type="text/html")


def install(app: FastAPI) -> None:
    """Add the app's catch-all route to `app` as a route of its own (not an included router, so the request
    guard can tell it apart). Call it last: every other route (health, docs, metrics, ...) is matched first."""
    app.router.add_api_route("/{path:path}", web_app, methods=["GET"], include_in_schema=False, response_model=None,
                             route_class_override=SpaRoute)

