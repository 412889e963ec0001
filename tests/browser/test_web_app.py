"""The web app in a real browser (Debian's Chromium via Playwright) against a real uvicorn server: sign-in,
chat streamed over SSE with citations that open their passage, feedback, uploads through the real Dagster
pipeline, what a viewer sees, expiry, accessibility (axe-core) and no request beyond the platform."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import MANUAL, RECIPE, index_plant, run_intake

pytestmark = pytest.mark.browser

QUESTION = "Which hydraulic oil does press P3 need and how often is it changed?"

# Records, per mutation of the message list, the last answer's length, its state and the citation chips shown.
WATCH_GROWTH = """() => {
  window.__growth = [];
  const list = document.querySelector('[data-testid=messages]');
  new MutationObserver(() => {
    const answers = document.querySelectorAll('[data-testid=answer]');
    const a = answers[answers.length - 1];
    const turn = a && a.closest('[data-testid=assistant-turn]');
    if (a) window.__growth.push({len: a.textContent.length, state: a.dataset.state,
                                 cites: turn.querySelectorAll('[data-testid=citation]').length});
  }).observe(list, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def plant(platform_db):
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"web-{uuid.uuid4().hex[:8]}")
    return index_plant(t)  # P3 manual (II), weld report (II), HT-5 recipe (III, group qa)


def token(t, user: str, role: Role = Role.operator, groups=(), ttl: int | None = None) -> str:
    return mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role, subject=user, groups=list(groups),
                      ttl_seconds=ttl)


def ask(page, question: str) -> None:
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Send").click()
    # The first answer of a process also loads the router's and the embedder's models.
    expect(page.get_by_test_id("answer").last).to_have_attribute("data-state", "done", timeout=90_000)


def test_sign_in_with_token_and_watch_the_answer_grow_with_citations(web, plant):
    page = web.page
    web.sign_in(token(plant, "olga"))
    expect(page.get_by_test_id("whoami")).to_have_text("olga")
    expect(page.get_by_test_id("ai-notice")).to_contain_text("AI")
    page.evaluate(WATCH_GROWTH)
    ask(page, QUESTION)
    growth = page.evaluate("window.__growth")
    streaming = [g["len"] for g in growth if g["state"] == "streaming" and g["len"] > 0]
    # The answer was painted in several steps while streaming, only ever growing, before the done event.
    assert len(set(streaming)) >= 3, growth
    assert streaming == sorted(streaming)
    first_done = next(i for i, g in enumerate(growth) if g["state"] == "done")
    assert all(g["state"] == "streaming" for g in growth[:first_done])
    assert all(g["cites"] == 0 for g in growth if g["state"] == "streaming" and g["len"] < streaming[-1])
    answer = page.get_by_test_id("answer").last.inner_text()
    assert "HLP 46" in answer and streaming[-1] <= len(answer)
    chips = page.get_by_test_id("citation")
    expect(chips.first).to_be_visible()
    assert "P3 manual" in chips.first.inner_text()
    expect(page.get_by_test_id("answer-meta")).to_contain_text("Specialist:")
    expect(page.get_by_test_id("answer-meta")).not_to_contain_text("Composition: …")  # read from the trace
    expect(page.get_by_test_id("ai-disclosure").last).to_contain_text("AI")
    # What the page shows is what the platform stored.
    with tenant_session(plant.id) as s:
        stored = s.execute(text("SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                                "WHERE c.user_subject = 'olga' AND m.role = 'assistant' "
                                "ORDER BY m.created_at DESC LIMIT 1")).scalar_one()
    assert stored.strip() == answer.strip()
    web.shot("chat-answer")
    assert not web.foreign_requests()


def test_citation_from_history_opens_the_passage_with_its_class(web, plant):
    page = web.page
    web.sign_in(token(plant, "quinn", groups=("qa",)))
    ask(page, "What is the heat treatment recipe HT-5 for the housings?")
    page.reload()  # the conversation comes back from the history API
    conversations = page.get_by_role("navigation", name="Conversations")
    conversations.get_by_role("button", name="What is the heat treatment").click()
    chip = page.get_by_test_id("citation").filter(has_text="HT-5 recipe").first
    chip.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_test_id("passage-title")).to_have_text("HT-5 recipe")
    expect(dialog.get_by_test_id("class-badge")).to_have_text("Class III · Critical")
    expect(dialog).to_contain_text("Page 1")
    expect(dialog).to_contain_text("Section: HT-5 recipe")
    expect(dialog.get_by_test_id("passage-text")).to_have_text(RECIPE)
    web.shot("citation-passage")
    with tenant_session(plant.id) as s:
        audited = s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'chunk.access' "
                                 "AND actor = 'quinn' AND details->>'via' = 'passage'")).scalar_one()
    assert audited == 1  # a Class III passage read is audited
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    # A Class II citation of the manual shows its own class.
    ask(page, QUESTION)
    page.get_by_test_id("citation").filter(has_text="P3 manual").last.click()
    expect(page.get_by_role("dialog").get_by_test_id("class-badge")).to_have_text("Class II · Confidential")
    expect(page.get_by_role("dialog").get_by_test_id("passage-text")).to_have_text(MANUAL)


def test_thumbs_down_with_a_comment_is_stored(web, plant):
    page = web.page
    web.sign_in(token(plant, "fred"))
    ask(page, QUESTION)
    page.get_by_role("button", name="Bad answer").click()
    comment = f"the interval is wrong for our plant {uuid.uuid4().hex[:6]}"
    page.get_by_label("What was wrong? (optional)").fill(comment)
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_role("status").filter(has_text="feedback was saved")).to_be_visible()
    expect(page.get_by_role("button", name="Bad answer")).to_have_attribute("aria-pressed", "true")
    web.shot("feedback-down")
    with tenant_session(plant.id) as s:
        rows = s.execute(text("SELECT rating, comment, value FROM feedback WHERE user_subject = 'fred'")).all()
    assert [(r.rating, r.comment) for r in rows] == [("down", comment)] and rows[0].value < 0


def test_operator_uploads_class_iii_documents_that_reach_awaiting_approval(web, plant):
    import dagster as dg

    page = web.page
    web.sign_in(token(plant, "otto", groups=("qa",)))
    page.get_by_role("navigation", name="Main").get_by_role("button", name="Documents").click()
    page.get_by_label("Class III · Critical").check()
    expect(page.get_by_role("button", name="Choose files…")).to_be_disabled()  # III needs groups first
    groups = page.get_by_role("textbox", name="Need-to-know groups")
    groups.fill("qa")
    groups.press("Enter")
    names = [f"ht-{uuid.uuid4().hex[:6]}.md", f"qc-{uuid.uuid4().hex[:6]}.md"]
    page.locator("input[type=file]").set_input_files([
        {"name": names[0], "mimeType": "text/markdown",
         "buffer": b"# Heat treatment HT-9\n\nAnneal the flanges at 520 C for three hours.\n"},
        {"name": names[1], "mimeType": "text/markdown",
         "buffer": b"# Quality check QC-4\n\nMeasure the flange hardness after annealing: 180 HB minimum.\n"},
    ])
    results = page.get_by_test_id("upload-results")
    for n in names:
        expect(results).to_contain_text(f"{n}: accepted: queued")
    rows = {n: page.get_by_test_id("document-row").filter(has_text=n) for n in names}
    for row in rows.values():
        expect(row.get_by_test_id("class-badge")).to_have_text("Class III · Critical")
        expect(row.get_by_test_id("status-badge")).to_have_text("queued")
    web.shot("upload-queued")

    runs = run_intake(dg.DagsterInstance.ephemeral(), {})
    assert runs and all(r.success for r in runs)
    for row in rows.values():  # the page follows the documents while they move
        expect(row.get_by_test_id("status-badge")).to_have_text("awaiting approval", timeout=30_000)
    with tenant_session(plant.id) as s:
        statuses = dict(s.execute(text("SELECT filename, status FROM documents WHERE filename = ANY(:n)"),
                                  {"n": names}).all())
    assert statuses == dict.fromkeys(names, "awaiting_approval")
    web.shot("upload-awaiting-approval")
    page.once("dialog", lambda d: d.accept())  # "Delete ... and everything indexed from it?"
    rows[names[1]].get_by_role("button", name="Delete").click()
    expect(rows[names[1]]).to_have_count(0)
    expect(rows[names[0]]).to_have_count(1)
    with tenant_session(plant.id) as s:
        left = s.execute(text("SELECT filename FROM documents WHERE filename = ANY(:n)"), {"n": names}).scalars().all()
    assert left == [names[0]]


def test_viewer_sees_no_class_iii_document_and_no_upload(web, plant):
    page = web.page
    web.sign_in(token(plant, "vera", Role.viewer, groups=("qa",)))
    page.goto("/documents")
    table = page.get_by_test_id("documents-table")
    expect(table).to_contain_text("P3 manual")
    expect(table).to_contain_text("weld report")
    expect(table).not_to_contain_text("HT-5 recipe")
    expect(page.get_by_test_id("class-badge").filter(has_text="Class III")).to_have_count(0)
    expect(page.get_by_test_id("class-badge").filter(has_text="Class IV")).to_have_count(0)
    for absent in (page.get_by_role("button", name="Choose files…"), page.get_by_test_id("dropzone"),
                   page.get_by_role("heading", name="Upload documents"), page.get_by_role("button", name="Delete")):
        expect(absent).to_have_count(0)
    web.shot("viewer-documents")


def test_alerts_memories_and_goals(web, plant, web_server, axe):
    import httpx

    from monitoring.alerts import raise_alert
    from monitoring.rules import Breach
    from tests.builders import bearer

    user = "nina"
    with httpx.Client(base_url=web_server) as http:
        rule = http.put("/v1/alert-rules", headers=bearer(plant, "root", Role.admin), json={"rules": [
            {"name": "down", "kind": "downtime_minutes", "threshold": 30}]}).json()[0]
        memory = http.post("/v1/memories", headers=bearer(plant, user), json={
            "type": "FACT", "content": "I work on press line P3 in hall 2"}).json()
        goal = http.post("/v1/goals", headers=bearer(plant, user), json={
            "text": "Cut the P3 hydraulic oil changes by a third this year"}).json()
    alert, action = raise_alert(plant.id, Breach(rule["id"], "down", "downtime_minutes", "M-7", 45, 30, "warning", "e1",
                                                 "Machine M-7 down for 45 min", {"machine_id": "M-7"}))
    assert action == "opened"
    page = web.page
    web.sign_in(token(plant, user))
    page.get_by_role("navigation", name="Main").get_by_role("button", name="Alerts & approvals").click()
    row = page.get_by_test_id("alerts-table").get_by_role("row").filter(has_text="Machine M-7 down")
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_contain_text(f"acknowledged (by {user})")
    row.get_by_role("button", name="Resolve").click()
    expect(row).to_contain_text("resolved")
    expect(page.get_by_test_id("memory").filter(has_text="press line P3")).to_have_count(1)
    expect(page.get_by_test_id("goal").filter(has_text="hydraulic oil changes")).to_contain_text("active")
    web.shot("alerts-memory")
    assert not (bad := axe(page)), ("alerts page", bad)
    page.get_by_role("button", name="Forget: I work on press line P3 in hall 2").click()
    expect(page.get_by_test_id("memory").filter(has_text="press line P3")).to_have_count(0)
    page.get_by_role("button", name=f"Abandon goal: {goal['text']}").click()
    expect(page.get_by_test_id("goal").filter(has_text="hydraulic oil changes")).to_contain_text("abandoned")
    expect(page.get_by_role("region", name="Latest evaluation")).to_contain_text("no evaluation has run yet")
    with tenant_session(plant.id) as s:
        assert s.execute(text("SELECT status, resolved_by FROM alerts WHERE id = :i"),
                         {"i": str(alert.id)}).one() == ("resolved", user)
        assert s.execute(text("SELECT count(*) FROM memories WHERE id = :i"), {"i": memory["id"]}).scalar_one() == 0
        assert s.execute(text("SELECT status FROM user_goals WHERE id = :i"), {"i": goal["id"]}).scalar_one() == \
            "abandoned"


def test_expired_token_leads_to_sign_in(web, plant):
    page = web.page
    # A token that expires while the app is open: the app signs out with the reason.
    web.sign_in(token(plant, "eve", ttl=5))
    expect(page.get_by_test_id("signin-reason")).to_contain_text("expired", timeout=15_000)
    expect(page.get_by_role("button", name="Use token")).to_be_visible()
    web.shot("expired-signed-out")
    # A token that has already expired: the API's 401 brings the sign-in page back, saying why.
    stale = token(plant, "eve", ttl=1)
    time.sleep(1.5)
    page.get_by_label("Access token").fill(stale)
    page.get_by_role("button", name="Use token").click()
    expect(page.get_by_test_id("signin-reason")).to_contain_text("sign in again")
    expect(page.get_by_test_id("whoami")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('eap.token')") is None
    web.shot("expired-token")


def test_chat_and_documents_pages_pass_axe_in_light_and_dark_at_desktop_and_tablet(web, plant, axe):
    page = web.page
    web.sign_in(token(plant, "ada", groups=("qa",)))
    ask(page, QUESTION)
    page.get_by_role("button", name="Bad answer").click()  # the comment form is part of the page too
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto("/")
        page.get_by_role("navigation", name="Conversations").get_by_role("button").nth(1).click()
        expect(page.get_by_test_id("citation").first).to_be_visible()
        assert not (bad := axe(page)), (f"chat page ({scheme})", bad)
        web.shot(f"a11y-chat-{scheme}")
        page.get_by_role("navigation", name="Main").get_by_role("button", name="Documents").click()
        expect(page.get_by_test_id("documents-table")).to_be_visible()
        assert not (bad := axe(page)), (f"documents page ({scheme})", bad)
        web.shot(f"a11y-documents-{scheme}")
    page.set_viewport_size({"width": 820, "height": 1180})  # tablet, portrait
    page.emulate_media(color_scheme="light")
    page.goto("/documents")
    expect(page.get_by_test_id("documents-table")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll
    web.shot("tablet-documents")
    page.goto("/")
    page.get_by_label("Your question").focus()
    page.keyboard.type("weld porosity cause")
    page.keyboard.press("Enter")  # keyboard only
    expect(page.get_by_test_id("answer").last).to_have_attribute("data-state", "done")
    assert not (bad := axe(page)), ("chat page (tablet)", bad)
    web.shot("tablet-chat")
    assert not web.foreign_requests()


def test_a_calculation_citation_opens_its_formula_not_a_passage(web, plant):
    """A [n] that cites the calculator (or a system record, or a SQL Guard query) has no passage behind it: the
    chip opens what it cites, and the page never asks for /v1/passages/null."""
    page = web.page
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    web.sign_in(token(plant, "calc-user"))
    ask(page, "What is 12.5 * 4 + 3?")
    expect(page.get_by_test_id("answer").last).to_contain_text("53")
    page.get_by_test_id("citation").last.click()
    dialog = page.get_by_role("dialog")
    source = dialog.get_by_test_id("record-source")
    expect(source).to_contain_text("calculation")
    expect(source).to_contain_text("Formula")
    expect(source).to_contain_text("53")
    web.shot("calculation-citation")
    assert not [u for u in asked if "/v1/passages/" in u]
