"""Single sign-on in a real browser: the web app's OIDC authorization-code flow with PKCE against a real identity
provider on loopback (tests/support/oidc_idp.py: authlib's OAuth 2.0 / OIDC server), the platform verifying the
IdP's tokens through its JWKS URL. The user is provisioned just in time with the role and need-to-know groups the
tenant's IdP mapping gives, asks a question and gets a cited answer; a tampered or missing PKCE verifier is refused
by the IdP; an IdP token running out brings back the sign-in page saying so. The app's own CSP is in force here
(no bypass): it must let the browser's code exchange with the IdP through."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from tests.builders import bearer, index_plant, settings_env

pytestmark = pytest.mark.browser

CLIENT_ID = "eap-web"
AUDIENCE = "eap-api"
QUESTION = "Which hydraulic oil does press P3 need and how often is it changed?"


@pytest.fixture(scope="module")
def idp(web_server):
    """The IdP on loopback, with the web app registered as a public client, and the platform configured to use it
    (the EAP_* variables an operator sets) for this module."""
    from core import security
    from tests.support.oidc_idp import LocalIdP

    server = LocalIdP(audience=AUDIENCE).start()
    server.add_client(CLIENT_ID, f"{web_server}/auth/callback", origin=web_server)
    env = {"EAP_OIDC_CLIENT_ID": CLIENT_ID, "EAP_OIDC_AUTHORIZATION_ENDPOINT": server.authorization_endpoint,
           "EAP_OIDC_TOKEN_ENDPOINT": server.token_endpoint, "EAP_JWKS_URL": server.jwks_url,
           "EAP_OIDC_ISSUER": server.issuer, "EAP_OIDC_AUDIENCE": AUDIENCE}
    try:
        with settings_env(env):
            yield server
    finally:
        security._jwks.cache_clear()
        server.stop()


@pytest.fixture(scope="module")
def plant(idp, web_server):
    """A tenant whose IdP mapping makes members of `plant-operators` operators with the `qa` group, and two IdP
    users of it."""
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"sso-{uuid.uuid4().hex[:8]}")
    index_plant(t)  # P3 manual (II), weld report (II), HT-5 recipe (III, group qa)
    r = httpx.put(f"{web_server}/v1/admin/idp-mapping", headers=bearer(t, "root", Role.admin), json={
        "rules": [{"claim": "groups", "value": "plant-operators", "role": "operator", "groups": ["qa"]}],
        "default_role": "viewer"})
    assert r.status_code == 200, r.text
    for user in ("alice", "eve", "pkce"):
        idp.add_user(user, f"{user}-secret-1", tenant=t.name, groups=["plant-operators"], name=user.title(),
                     email=f"{user}@plant.example")
    return t


@pytest.fixture
def sso_page(browser, web_server, idp):
    """A browser context WITH the app's Content-Security-Policy, recording every request."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=web_server, service_workers="block")
    ctx.set_default_timeout(20_000)
    seen: list[str] = []
    ctx.on("request", lambda r: seen.append(r.url))
    page = ctx.new_page()
    yield page
    ctx.close()
    own = {urlsplit(web_server).netloc, urlsplit(idp.issuer).netloc}
    foreign = [u for u in seen if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc not in own]
    assert not foreign, f"the web app reached beyond the platform and its IdP: {foreign}"


def _shot(page, name: str) -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"web-{name}.png"), full_page=True)


def sign_in_with_sso(page, idp, user: str) -> None:
    page.goto("/")
    page.get_by_role("tab", name="Single sign-on").click()
    page.get_by_role("button", name="Continue to sign-in").click()
    page.wait_for_url(re.compile("^" + re.escape(idp.authorization_endpoint)))
    expect(page.get_by_role("heading", name="Local identity provider")).to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(f"{user}-secret-1")
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_with_sso_provisions_the_mapped_user_who_gets_a_cited_answer(sso_page, idp, plant, web_server):
    page = sso_page
    sign_in_with_sso(page, idp, "alice")
    subject = f"oidc:{idp.issuer}#alice"
    expect(page.get_by_test_id("whoami")).to_have_text("alice")  # the IdP's subject; records carry `subject`
    assert urlsplit(page.url).path == "/" and "code=" not in page.url  # the code does not stay in the address bar
    expect(page.get_by_role("banner").get_by_text("operator", exact=True)).to_be_visible()  # the mapped role
    assert idp.token_requests[-1] == (200, None)
    token = page.evaluate("sessionStorage.getItem('eap.token')")
    assert token and page.evaluate("sessionStorage.getItem('eap.pkce')") is None  # the verifier is used once
    # Provisioned just in time from the mapping (role operator, group qa), audited as an IdP account.
    with tenant_session(plant.id) as s:
        user = s.execute(text("SELECT role, groups, source FROM users WHERE username = :u"), {"u": subject}).one()
    assert (user.role, list(user.groups), user.source) == ("operator", ["qa"], "oidc")
    # The IdP's token is what the page uses against the API.
    me = httpx.get(f"{web_server}/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["subject"] == "alice" and me["role"] == "operator" and me["groups"] == ["qa"]

    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("answer").last).to_have_attribute("data-state", "done", timeout=90_000)
    assert "HLP 46" in page.get_by_test_id("answer").last.inner_text()
    chip = page.get_by_test_id("citation").filter(has_text="P3 manual").first
    chip.click()
    expect(page.get_by_role("dialog").get_by_test_id("passage-title")).to_have_text("P3 manual")
    page.keyboard.press("Escape")
    # The mapped need-to-know group opens the Class III recipe to this user.
    page.get_by_role("navigation", name="Main").get_by_role("button", name="Documents").click()
    expect(page.get_by_test_id("documents-table")).to_contain_text("HT-5 recipe")
    _shot(page, "sso-signed-in")
    with tenant_session(plant.id) as s:
        asked = s.execute(text("SELECT count(*) FROM conversations WHERE user_subject = :u"),
                          {"u": subject}).scalar_one()
    assert asked == 1


def _authorize(idp, web_server, user: str, verifier: str) -> str:
    """The login at the IdP over plain HTTP (as the browser does it): the code it redirects back with."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": f"{web_server}/auth/callback",
              "scope": "openid profile email", "state": "s", "code_challenge": challenge,
              "code_challenge_method": "S256"}
    r = httpx.post(idp.authorization_endpoint, params=params, data={"username": user, "password": f"{user}-secret-1"})
    assert r.status_code == 302, r.text
    return re.search(r"[?&]code=([^&]+)", r.headers["location"]).group(1)


def test_the_identity_provider_refuses_a_missing_or_tampered_verifier(sso_page, idp, plant, web_server):
    exchange = {"grant_type": "authorization_code", "redirect_uri": f"{web_server}/auth/callback",
                "client_id": CLIENT_ID}
    # Without a code_challenge the IdP does not even start the flow.
    r = httpx.get(idp.authorization_endpoint, params={"response_type": "code", "client_id": CLIENT_ID,
                                                       "redirect_uri": f"{web_server}/auth/callback", "state": "s"})
    assert r.status_code == 400 and "code_challenge" in r.text
    verifier = secrets.token_urlsafe(48)
    code = _authorize(idp, web_server, "pkce", verifier)
    missing = httpx.post(idp.token_endpoint, data={**exchange, "code": code})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    tampered = httpx.post(idp.token_endpoint, data={**exchange, "code": code, "code_verifier": verifier[:-2] + "xy"})
    assert tampered.status_code == 400 and tampered.json()["error"] == "invalid_grant"
    # The right verifier gets a token the platform accepts (so the refusals above were the verifier's doing).
    ok = httpx.post(idp.token_endpoint, data={**exchange, "code": code, "code_verifier": verifier})
    assert ok.status_code == 200, ok.text
    me = httpx.get(f"{web_server}/v1/me", headers={"Authorization": f"Bearer {ok.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["subject"] == "pkce"

    # In the browser: the verifier the app kept is changed before it comes back from the IdP.
    page = sso_page
    page.add_init_script("""(() => {
      if (location.pathname !== '/auth/callback') return;
      const saved = JSON.parse(sessionStorage.getItem('eap.pkce') || 'null');
      if (!saved) return;
      saved.verifier = saved.verifier.slice(0, -1) + (saved.verifier.endsWith('A') ? 'B' : 'A');
      sessionStorage.setItem('eap.pkce', JSON.stringify(saved));
    })()""")
    before = len(idp.token_requests)
    sign_in_with_sso(page, idp, "alice")
    reason = page.get_by_test_id("signin-reason")
    expect(reason).to_contain_text("did not issue a token")
    expect(reason).to_contain_text("invalid_grant")
    expect(page.get_by_test_id("whoami")).to_have_count(0)
    assert idp.token_requests[before:] == [(400, "invalid_grant")]
    assert page.evaluate("sessionStorage.getItem('eap.token')") is None
    _shot(page, "sso-tampered-verifier")


def test_an_expired_sso_session_asks_to_sign_in_again(sso_page, idp, plant):
    page = sso_page
    idp.token_lifetime = 8
    try:
        sign_in_with_sso(page, idp, "eve")
        expect(page.get_by_test_id("whoami")).to_have_text("eve")
    finally:
        idp.token_lifetime = 900
    reason = page.get_by_test_id("signin-reason")
    expect(reason).to_contain_text("expired", timeout=20_000)
    expect(reason).to_contain_text("sign in again")
    expect(page.get_by_role("button", name="Continue to sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('eap.token')") is None
    _shot(page, "sso-expired")
    # Signing in again goes back through the IdP and works.
    page.get_by_role("button", name="Continue to sign-in").click()
    page.wait_for_url(re.compile("^" + re.escape(idp.authorization_endpoint)))
    page.get_by_label("Username").fill("eve")
    page.get_by_label("Password").fill("eve-secret-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_have_text("eve")
