"""A local OpenID Connect identity provider on loopback, for the browser tier's single sign-on tests.

Built from authlib's OAuth 2.0 / OpenID Connect server (authorization-code grant, PKCE per RFC 7636, ID tokens,
JWT access tokens per RFC 9068) on Flask, served by Werkzeug in a thread; keys are joserfc RSA keys. Nothing
here is hand-rolled crypto: signing, the S256 check of the `code_verifier` against the stored `code_challenge`
and the protocol checks are authlib's. What this module adds is the glue an IdP product would have: an in-memory
client and user registry, a login form, and the discovery document.

- `GET /.well-known/openid-configuration`: discovery (issuer, endpoints, jwks_uri, PKCE S256).
- `GET /jwks`: the public signing key (the platform's EAP_JWKS_URL).
- `GET /authorize`: validates the request (client, redirect URI, `code_challenge` required) and shows a login
  form; `POST /authorize` checks the password and redirects back with a one-time code.
- `POST /token`: code → tokens for a public client (no secret): refused unless the `code_verifier` matches
  the code's S256 challenge. CORS allows the web app's origin (the browser calls it directly).

Access tokens carry `tenant`, `groups` and `name` (what the platform's IdP mapping reads) and expire after
`token_lifetime` seconds (changeable while the server runs, for expiry tests).
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from flask import Flask, Response, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class IdpUser:
    username: str
    password: str
    claims: dict[str, Any] = field(default_factory=dict)  # groups, tenant, email, name ...

    def get_user_id(self) -> str:
        return self.username


@dataclass
class Client(ClientMixin):
    client_id: str
    redirect_uris: list[str]
    scope: str = "openid profile email"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # a public client has no secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"  # public client: it proves itself with PKCE

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: IdpUser
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return "0"

    def get_amr(self) -> list[str]:
        return ["pwd"]


class LocalIdP:
    """`LocalIdP(audience=...).start()`; `.issuer`, `.jwks_url`, `.authorization_endpoint`, `.token_endpoint`;
    `.add_client(...)`, `.add_user(...)`; `.stop()`. `.token_requests` records (status, error) per token call."""

    def __init__(self, audience: str, token_lifetime: int = 900) -> None:
        self.audience = audience
        self.token_lifetime = token_lifetime
        self.key = RSAKey.generate_key(2048, parameters={"kid": f"idp-{secrets.token_hex(4)}", "use": "sig",
                                                         "alg": "RS256"}, private=True)
        self.clients: dict[str, Client] = {}
        self.users: dict[str, IdpUser] = {}
        self.codes: dict[str, Code] = {}
        self.cors_origins: set[str] = set()
        self.token_requests: list[tuple[int, str | None]] = []
        self._server: Any = None
        self._access_tokens: Any = None
        self._thread: threading.Thread | None = None
        self.issuer = ""

    # ------------------------------------------------------------------ registry

    def add_client(self, client_id: str, redirect_uri: str, origin: str) -> None:
        self.clients[client_id] = Client(client_id, [redirect_uri])
        self.cors_origins.add(origin)

    def add_user(self, username: str, password: str, **claims: Any) -> IdpUser:
        self.users[username] = IdpUser(username, password, claims)
        return self.users[username]

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    # ------------------------------------------------------------------ server

    def start(self) -> LocalIdP:
        app = self._app()
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._access_tokens.issuer = self.issuer
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-idp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def _app(self) -> Flask:
        idp = self
        app = Flask("local-idp")
        app.config["SECRET_KEY"] = secrets.token_hex(16)

        def query_client(client_id: str) -> Client | None:
            return idp.clients.get(client_id)

        def save_token(token: dict[str, Any], req: Any) -> None:
            return None  # JWT access tokens are self-contained; nothing to store

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # public client: PKCE, no secret

            def validate_authorization_request(self) -> str:
                # This IdP's policy (as RFC 9700 advises): no code without an S256 challenge. authlib's
                # CodeChallenge(required=True) alone would issue the code and refuse it at the token endpoint.
                data = self.request.payload.data
                if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
                    raise InvalidRequestError("PKCE is required: code_challenge with code_challenge_method=S256")
                return str(super().validate_authorization_request())

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                idp.codes[code] = Code(code=code, client_id=req.client.get_client_id(),
                                       redirect_uri=req.payload.redirect_uri, scope=req.payload.scope or "",
                                       user=req.user, code_challenge=data.get("code_challenge"),
                                       code_challenge_method=data.get("code_challenge_method"),
                                       nonce=data.get("nonce"), auth_time=int(time.time()),
                                       expires_at=time.time() + 120)

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                item = idp.codes.get(code)
                if item and item.client_id == client.get_client_id() and item.expires_at > time.time():
                    return item
                return None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                idp.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> IdpUser:
                return authorization_code.user

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in idp.codes.values())

            def resolve_client_private_key(self, client: Client) -> KeySet:
                return KeySet([idp.key])

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": idp.key.kid or ""}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": idp.issuer, "aud": [client.get_client_id()],
                        "exp": int(time.time()) + idp.token_lifetime}

            def generate_user_info(self, user: IdpUser, scope: str) -> UserInfo:
                info = UserInfo(sub=user.username, name=user.claims.get("name", user.username))
                if "email" in scope.split() and "email" in user.claims:
                    info["email"] = user.claims["email"]
                return info

        class AccessTokens(JWTBearerTokenGenerator):
            def get_jwks(self) -> KeySet:
                return KeySet([idp.key])

            def get_audiences(self, client: Client, user: IdpUser, scope: str) -> str:
                return idp.audience

            def get_extra_claims(self, client: Client, grant_type: str, user: IdpUser, scope: str) -> dict[str, Any]:
                return {k: v for k, v in user.claims.items() if k in ("tenant", "groups", "name", "email", "roles")}

        server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
        server.register_grant(CodeGrant, [CodeChallenge(required=True), IdToken(require_nonce=False)])
        # Registered after init_app (which registers the opaque default): JWT access tokens, short-lived.
        self._access_tokens = AccessTokens(issuer="", expires_generator=lambda client, grant_type: idp.token_lifetime)
        server.register_token_generator("default", self._access_tokens)

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Response:
            return jsonify({
                "issuer": idp.issuer, "authorization_endpoint": idp.authorization_endpoint,
                "token_endpoint": idp.token_endpoint, "jwks_uri": idp.jwks_url,
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["none"], "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email"]})

        @app.get("/jwks")
        def jwks() -> Response:
            return jsonify(KeySet([idp.key]).as_dict(private=False))

        def login_form(error: str | None, status: int) -> Response:
            query = html.escape(request.query_string.decode(), quote=True)
            msg = f'<p role="alert" id="error">{html.escape(error)}</p>' if error else ""
            body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Local IdP sign-in</title>"
                    "</head><body><main><h1>Local identity provider</h1>" + msg +
                    f"<form method=\"post\" action=\"/authorize?{query}\">"
                    "<label for=\"username\">Username</label> <input id=\"username\" name=\"username\" "
                    "autocomplete=\"username\"><br><label for=\"password\">Password</label> "
                    "<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">"
                    "<br><button type=\"submit\">Sign in</button></form></main></body></html>")
            return Response(body, status=status, mimetype="text/html")

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Response:
            from authlib.oauth2 import OAuth2Error

            try:  # client, redirect URI, code_challenge (required)
                grant = server.get_consent_grant(end_user=None)
            except OAuth2Error as err:
                return Response(f"<!doctype html><title>Refused</title><p role=\"alert\">{html.escape(err.error)}: "
                                f"{html.escape(err.description or '')}</p>", status=400, mimetype="text/html")
            if request.method == "GET":
                return login_form(None, 200)
            user = idp.users.get(request.form.get("username", ""))
            if user is None or not secrets.compare_digest(user.password, request.form.get("password", "")):
                return login_form("Wrong username or password.", 401)
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/token")
        def token() -> Response:
            resp = server.create_token_response()
            error = resp.get_json(silent=True) or {}
            idp.token_requests.append((resp.status_code, error.get("error") if resp.status_code >= 400 else None))
            return resp

        @app.after_request
        def cors(resp: Response) -> Response:
            origin = request.headers.get("Origin")
            if request.path == "/token" and origin in idp.cors_origins:
                resp.headers["Access-Control-Allow-Origin"] = origin
                resp.headers["Vary"] = "Origin"
            resp.headers["Cache-Control"] = "no-store"
            return resp

        return app
