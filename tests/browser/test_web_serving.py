"""How the API serves the web app and the two reads it adds, over real HTTP on loopback (the uvicorn server of
the browser tests): the app at / with its CSP, client-side routes, cached assets, no path escape, the API's
own 404s untouched, sign-in methods, cited passages under the search access rule, and a clear page when the
app is not built."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.settings import get_settings
from tests.builders import bearer, index_plant

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def plant(platform_db):
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"webs-{uuid.uuid4().hex[:8]}")
    return index_plant(t)


def test_app_routes_assets_and_the_api_404s(web_server):
    with httpx.Client(base_url=web_server) as http:
        index = http.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert '<div id="root">' in index.text
        csp = index.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp and "connect-src 'self';" in csp
        assert index.headers["cache-control"] == "no-cache"
        for route in ("/documents", "/admin", "/auth/callback"):  # client-side routes get the app
            r = http.get(route)
            assert r.status_code == 200 and r.text == index.text
        assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.text)
        assert assets
        for a in assets:
            r = http.get(a)
            assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        assert any(http.get(a).headers["content-type"].startswith("text/javascript") for a in assets)
        missing = http.get("/assets/gone-1234.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        # No escape from the build folder, however the path is spelled.
        for raw in ("/assets/..%2f..%2fpyproject.toml", "/..%2f..%2fpyproject.toml", "/%2e%2e/%2e%2e/pyproject.toml"):
            r = http.get(raw)
            assert "[project]" not in r.text and r.status_code in (200, 404)
        # The API keeps its JSON errors: an unknown /v1 path is a 404 to anyone, a known one still needs a token.
        nope = http.get("/v1/nope")
        assert nope.status_code == 404 and nope.json()["error"]["code"] == "not_found"
        me = http.get("/v1/me")
        assert me.status_code == 401 and me.json()["error"]["code"] == "missing_token"
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.post("/somewhere", json={}).status_code == 405  # the app's files are read-only


def test_auth_config_is_public_and_says_what_is_offered(web_server):
    r = httpx.get(f"{web_server}/v1/auth/config")
    assert r.status_code == 200
    body = r.json()
    assert body["oidc"]["enabled"] is False and body["oidc"]["authorization_endpoint"] is None
    assert body["password_login"] is True and body["token_paste"] is True  # EAP_ENV=test


def test_auth_config_with_an_identity_provider_and_the_csp_that_lets_the_code_exchange_through(platform_db, tmp_path):
    from core.settings import get_settings as settings_dep
    from serving.app import create_app

    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    idp = get_settings().model_copy(update={
        "oidc_client_id": "eap-web", "oidc_authorization_endpoint": "https://idp.example.test/authorize",
        "oidc_token_endpoint": "https://idp.example.test:8443/token", "jwks_local_path": str(jwks),
        "env": "prod"})
    app = create_app()
    app.dependency_overrides[settings_dep] = lambda: idp
    with TestClient(app) as c:
        cfg = c.get("/v1/auth/config").json()
        page = c.get("/")
    assert cfg["oidc"] == {"enabled": True, "authorization_endpoint": "https://idp.example.test/authorize",
                           "token_endpoint": "https://idp.example.test:8443/token", "client_id": "eap-web",
                           "scope": idp.oidc_scope}
    assert cfg["token_paste"] is False  # production: no pasted tokens offered
    assert "connect-src 'self' https://idp.example.test:8443;" in page.headers["content-security-policy"]


def test_missing_build_answers_with_how_to_build_it(platform_db, tmp_path):
    from core.settings import get_settings as settings_dep
    from serving.app import create_app

    app = create_app()
    app.dependency_overrides[settings_dep] = lambda: get_settings().model_copy(update={"web_dist": tmp_path})
    with TestClient(app) as c:
        r = c.get("/documents")
        api = c.get("/v1/nope")
    assert r.status_code == 503 and "The web app is not built" in r.text and "npm run build" in r.text
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_passage_follows_the_search_access_rule_and_audits_class_iii(web_server, plant):
    with tenant_session(plant.id) as s:
        chunks = dict(s.execute(text("SELECT d.title, c.id FROM chunks c JOIN documents d ON d.id = c.document_id"))
                      .all())
    recipe, manual = chunks["HT-5 recipe"], chunks["P3 manual"]
    with httpx.Client(base_url=web_server) as http:
        ok = http.get(f"/v1/passages/{recipe}", headers=bearer(plant, "pia", groups=("qa",)))
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["title"] == "HT-5 recipe" and body["classification"] == "III"
        assert body["classification_label"] == "Critical" and body["page"] == 1 and "540 C" in body["text"]
        open_doc = http.get(f"/v1/passages/{manual}", headers=bearer(plant, "val", Role.viewer))
        assert open_doc.status_code == 200 and open_doc.json()["classification"] == "II"
        denied = [http.get(f"/v1/passages/{recipe}", headers=h) for h in (
            bearer(plant, "val", Role.viewer, groups=("qa",)),  # above a viewer's ceiling
            bearer(plant, "olaf", groups=("rnd",)))]  # not in the need-to-know group
        missing = http.get(f"/v1/passages/{uuid.uuid4()}", headers=bearer(plant, "pia", groups=("qa",)))
        for r in (*denied, missing):  # "not yours" and "absent" look the same
            assert r.status_code == 404 and r.json()["error"]["code"] == "passage_not_found"
        assert http.get(f"/v1/passages/{recipe}").status_code == 401
    with tenant_session(plant.id) as s:
        reads = s.execute(text("SELECT actor, resource_id, details->>'via' AS via FROM audit_events "
                               "WHERE action = 'chunk.access' AND details->>'via' = 'passage'")).all()
    assert [(r.actor, r.resource_id) for r in reads] == [("pia", str(recipe))]  # Class III only, once


def test_passage_of_another_tenant_is_not_found(web_server, plant, make_tenant):
    other = make_tenant("webx")
    with tenant_session(plant.id) as s:
        chunk = s.execute(text("SELECT id FROM chunks LIMIT 1")).scalar_one()
    r = httpx.get(f"{web_server}/v1/passages/{chunk}", headers=bearer(other, "pia", Role.admin, groups=("qa",)))
    assert r.status_code == 404
