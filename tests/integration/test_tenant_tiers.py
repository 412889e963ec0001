"""Issue 20 item 5, model tiers: a tenant admin chooses, within the tiers the platform offers (EAP_LLM_TIERS),
which tiers the tenant may use, its default tier and per-specialist defaults (PATCH /v1/admin/settings,
validated, audited old → new), and the orchestrator enforces it on POST /v1/chat and the OpenAI-compatible
API: a disallowed tier is refused (403) or downgraded as the policy says, escalation stays within the allowed
tiers, and the tier used is in the answer and the usage records. The model is the scripted double injected
as the app's model dependency; each tier has its own model name, so the calls show which tier ran."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role
from core.settings import get_settings
from identity.tenancy import ensure_user
from tests.builders import bearer, new_plant, scripted_chat

QUESTION = "How often must the hydraulic oil of press P3 be changed?"
GOOD = "Change the hydraulic oil of press P3 every 4000 operating hours [1]."
BAD = "Change the hydraulic oil of press P3 every 9999 operating hours [1]."  # a number no source has
MODELS = {t: f"openai/eap-{t.lower()}" for t in ("LIGHT", "STANDARD", "HEAVY")}


@pytest.fixture(scope="module")
def plant(platform_db):
    t = new_plant("tiers")
    ensure_user(t, "ada", Role.admin)
    return t


@pytest.fixture
def tier_models(monkeypatch):
    """A model name per tier (replies come from the scripted double); `offer(...)` sets EAP_LLM_TIERS."""
    for tier, name in MODELS.items():
        monkeypatch.setenv(f"EAP_LLM_MODEL_{tier}", name)
    get_settings.cache_clear()

    def offer(tiers: str | None) -> None:
        if tiers is None:
            monkeypatch.delenv("EAP_LLM_TIERS", raising=False)
        else:
            monkeypatch.setenv("EAP_LLM_TIERS", tiers)
        get_settings.cache_clear()

    yield offer
    monkeypatch.undo()
    get_settings.cache_clear()


def _admin(t, who="ada"):
    return bearer(t, who, Role.admin)


def _set(client, t, policy, who="ada"):
    return client.patch("/v1/admin/settings", json={"model_tiers": policy}, headers=_admin(t, who))


def _audit(t, action):
    with tenant_session(t.id) as s:
        return [dict(r) for r in s.execute(text(
            "SELECT outcome, actor, details FROM audit_events WHERE tenant_id = :t AND action = :a ORDER BY seq"),
            {"t": str(t.id), "a": action}).mappings()]


def _usage_tiers(t, user):
    with tenant_session(t.id) as s:
        return [r.tier for r in s.execute(text("SELECT tier FROM usage_records WHERE user_subject = :u "
                                               "ORDER BY created_at, tier"), {"u": user})]


def _oai(client, t, user, model="maintenance_advisor", **eap):
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], **({"eap": eap} if eap else {})}
    return client.post("/v1/chat/completions", json=body, headers=bearer(t, user))


def test_an_admin_sets_the_tenants_tiers_within_what_the_platform_offers(client, make_tenant, tier_models):
    t = make_tenant("tiers")
    ensure_user(t, "ada", Role.admin)
    now = client.get("/v1/admin/settings", headers=_admin(t)).json()
    assert now["model_tiers"] == {"allowed": ["LIGHT", "STANDARD", "HEAVY"], "default": None, "specialists": {},
                                  "on_disallowed": "refuse"}
    assert now["offered_tiers"] == [{"tier": k, "model": v} for k, v in MODELS.items()]

    tier_models("LIGHT,STANDARD")  # the operator offers two tiers
    assert [o["tier"] for o in client.get("/v1/admin/settings", headers=_admin(t)).json()["offered_tiers"]] == [
        "LIGHT", "STANDARD"]
    for bad, code in (({"allowed": ["LIGHT", "HEAVY"]}, "tier_not_offered"),
                      ({"allowed": ["LIGHT", "ULTRA"]}, "unknown_tier"),
                      ({"allowed": ["LIGHT"], "default": "STANDARD"}, "tier_not_allowed"),
                      ({"allowed": ["LIGHT"], "specialists": {"maintenance_advisor": "heavy"}}, "tier_not_allowed"),
                      ({"allowed": ["LIGHT"], "specialists": {"no_such_specialist": "LIGHT"}}, "unknown_specialist")):
        r = _set(client, t, bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (bad, r.text)
    for malformed in ({"allowed": []}, {"allowed": ["LIGHT"], "on_disallowed": "ignore"},
                      {"allowed": ["LIGHT"], "tenant_id": "x"}):
        assert _set(client, t, malformed).status_code == 422
    assert client.get("/v1/admin/settings", headers=_admin(t)).json()["model_tiers"]["allowed"] == [
        "LIGHT", "STANDARD"]  # nothing refused was stored
    assert [a["details"]["code"] for a in _audit(t, "tenant.settings.model_tiers") if a["outcome"] == "denied"] == [
        "tier_not_offered", "unknown_tier", "tier_not_allowed", "tier_not_allowed", "unknown_specialist"]

    policy = {"allowed": ["standard", "light"], "default": "light", "specialists": {"procedure_expert": "STANDARD"}}
    r = _set(client, t, policy)
    assert r.status_code == 200, r.text
    stored = {"allowed": ["LIGHT", "STANDARD"], "default": "LIGHT", "specialists": {"procedure_expert": "STANDARD"},
              "on_disallowed": "refuse"}
    assert r.json()["model_tiers"] == stored
    assert _set(client, t, {**policy, "on_disallowed": "downgrade"}).status_code == 200
    assert _set(client, t, {**policy, "on_disallowed": "downgrade"}).status_code == 200  # unchanged: no record
    changes = [a for a in _audit(t, "tenant.settings.model_tiers") if a["outcome"] == "success"]
    assert [(a["actor"], a["details"]["from"], a["details"]["to"]) for a in changes] == [
        ("ada", None, stored), ("ada", stored, {**stored, "on_disallowed": "downgrade"})]
    # Non-admins cannot read or change it.
    assert client.get("/v1/admin/settings", headers=bearer(t, "olaf")).status_code == 403
    assert client.patch("/v1/admin/settings", json={"model_tiers": {"allowed": ["LIGHT"]}},
                        headers=bearer(t, "olaf")).status_code == 403


def test_a_disallowed_tier_is_refused_and_escalation_stays_within_the_allowed_tiers(client, plant, tier_models):
    t = plant
    assert _set(client, t, {"allowed": ["LIGHT", "STANDARD"], "default": "LIGHT"}).status_code == 200
    with scripted_chat(client.app, [GOOD]) as model:
        for r in (client.post("/v1/chat", json={"message": QUESTION, "tier": "HEAVY"}, headers=bearer(t, "rita")),
                  client.post("/v1/chat", json={"message": QUESTION, "tier": "heavy"},
                              headers={**bearer(t, "rita"), "Accept": "text/event-stream"}),
                  _oai(client, t, "rita", model="auto@HEAVY"),
                  _oai(client, t, "rita", tier="HEAVY"),
                  client.post("/v1/chat/completions", headers=bearer(t, "rita"), json={
                      "model": "auto@HEAVY", "stream": True, "messages": [{"role": "user", "content": QUESTION}]})):
            assert r.status_code == 403, r.text
            err = r.json()["error"]
            assert err["code"] == "tier_not_allowed" and err["details"] == {"requested": "HEAVY",
                                                                           "allowed": ["LIGHT", "STANDARD"]}
        for bad in (_oai(client, t, "rita", model="auto@ULTRA"), _oai(client, t, "rita", model="auto@LIGHT",
                                                                       tier="STANDARD"),
                    client.post("/v1/chat", json={"message": QUESTION, "tier": "ULTRA"}, headers=bearer(t, "rita"))):
            assert bad.status_code == 422 and bad.json()["error"]["code"] in ("unknown_tier", "conflicting_tier")
        assert model.requests == [] and _usage_tiers(t, "rita") == []  # no model call, nothing stored
        assert client.get("/v1/conversations", headers=bearer(t, "rita")).json() == []
    denied = [a for a in _audit(t, "access.denied") if a["details"].get("code") == "tier_not_allowed"]
    assert len(denied) == 5  # every refusal is audited

    # An allowed tier is used as asked.
    with scripted_chat(client.app, [GOOD]) as model:
        r = client.post("/v1/chat", json={"message": QUESTION, "tier": "STANDARD"}, headers=bearer(t, "rita"))
    assert r.status_code == 200, r.text
    assert r.json()["model_tier"] == "STANDARD" and [q["model"] for q in model.requests] == [MODELS["STANDARD"]]

    # Unverifiable drafts escalate LIGHT → STANDARD and stop there: HEAVY is never called.
    with scripted_chat(client.app, [BAD, BAD, BAD]) as model:
        r = client.post("/v1/chat", json={"message": QUESTION}, headers=bearer(t, "sam"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [q["model"] for q in model.requests] == [MODELS["LIGHT"], MODELS["STANDARD"]] and model.replies == [BAD]
    assert body["model_tier"] == "STANDARD" and body["outcome"] == "downgraded"
    step = next(s for s in body["trace"] if s["step"] == "THINK.tier")
    assert step["tier"] == "LIGHT" and step["allowed"] == ["LIGHT", "STANDARD"]
    assert _usage_tiers(t, "sam") == ["LIGHT", "STANDARD"]
    by_tier = {row["key"] for row in client.get("/v1/usage", params={"group_by": "tier", "user": "sam"},
                                                headers=_admin(t)).json()["rows"]}
    assert by_tier == {"LIGHT", "STANDARD"}


def test_downgrade_policy_answers_on_an_allowed_tier_and_says_so(client, plant, tier_models):
    t = plant
    assert _set(client, t, {"allowed": ["LIGHT"], "on_disallowed": "downgrade"}).status_code == 200
    with scripted_chat(client.app, [GOOD]) as model:
        r = _oai(client, t, "dora", model="procedure_expert@HEAVY")
    assert r.status_code == 200, r.text
    eap = r.json()["eap"]
    assert eap["model_tier"] == "LIGHT" and eap["specialist"] == "procedure_expert"
    assert [q["model"] for q in model.requests] == [MODELS["LIGHT"]]
    assert any("HEAVY is not available" in n and "LIGHT" in n for n in eap["retrieval_notes"])
    trace = client.get(f"/v1/traces/{eap['trace_id']}", headers=bearer(t, "dora")).json()
    step = next(s for s in trace["trace"] if s["step"] == "THINK.tier")
    assert (step["requested"], step["downgraded_from"], step["tier"]) == ("HEAVY", "HEAVY", "LIGHT")
    assert _usage_tiers(t, "dora") == ["LIGHT"]
    [rec] = [a for a in _audit(t, "chat") if a["actor"] == "dora"]
    assert rec["details"]["model_tier"] == "LIGHT"


def test_the_default_tier_and_per_specialist_defaults_set_where_answers_start(client, plant, tier_models):
    t = plant
    # The platform's own defaults: maintenance_advisor starts on LIGHT, procedure_expert on STANDARD.
    assert _set(client, t, {"allowed": ["LIGHT", "STANDARD", "HEAVY"], "default": "STANDARD",
                            "specialists": {"procedure_expert": "HEAVY"}}).status_code == 200
    used = {}
    for spec in ("maintenance_advisor", "procedure_expert"):
        with scripted_chat(client.app, [GOOD]) as model:
            r = _oai(client, t, "pia", model=spec)
        assert r.status_code == 200, r.text
        used[spec] = (r.json()["eap"]["model_tier"], model.requests[0]["model"])
    assert used == {"maintenance_advisor": ("STANDARD", MODELS["STANDARD"]),
                    "procedure_expert": ("HEAVY", MODELS["HEAVY"])}


def test_an_admin_of_another_tenant_cannot_read_or_change_this_tenants_tiers(client, plant, make_tenant, tier_models):
    a = plant
    b = make_tenant("tiers")
    ensure_user(b, "eve", Role.admin)
    mine = {"allowed": ["LIGHT"], "default": "LIGHT", "specialists": {}, "on_disallowed": "refuse"}
    assert _set(client, a, mine).status_code == 200
    a_records = _audit(a, "tenant.settings.model_tiers")
    eve = _admin(b, "eve")
    theirs = client.get("/v1/admin/settings", headers=eve).json()["model_tiers"]
    assert theirs["allowed"] == ["LIGHT", "STANDARD", "HEAVY"]  # B's own (nothing stored), not A's
    # Naming tenant A in the body changes nothing but B's own settings.
    r = client.patch("/v1/admin/settings", headers=eve, json={
        "tenant": a.name, "tenant_id": str(a.id), "model_tiers": {"allowed": ["HEAVY"]}})
    assert r.status_code == 200 and r.json()["model_tiers"]["allowed"] == ["HEAVY"]
    assert client.get("/v1/admin/settings", headers=_admin(a)).json()["model_tiers"] == mine
    assert _audit(a, "tenant.settings.model_tiers") == a_records  # nothing recorded against A
    assert [x["details"]["to"]["allowed"] for x in _audit(b, "tenant.settings.model_tiers")] == [["HEAVY"]]
    # An admin token for B that names tenant A in its claims but is signed by nobody the platform trusts: 401.
    forged = bearer(a, "eve", Role.admin)["Authorization"][:-4] + "AAAA"
    assert client.get("/v1/admin/settings", headers={"Authorization": forged}).status_code == 401
    assert client.patch("/v1/admin/settings", json={"model_tiers": {"allowed": ["HEAVY"]}},
                        headers={"Authorization": forged}).status_code == 401
    # An admin API key of tenant A does not reach the admin API (keys cannot even be scoped to it).
    assert client.post("/v1/admin/api-keys", json={"name": "ci", "role": "admin", "allowed_prefixes": ["/v1"]},
                       headers=_admin(a)).json()["error"]["code"] == "invalid_scope"
    key = client.post("/v1/admin/api-keys", json={"name": "ci", "role": "admin", "allowed_prefixes": ["/v1/chat"]},
                      headers=_admin(a)).json()["key"]
    assert client.patch("/v1/admin/settings", json={"model_tiers": {"allowed": ["HEAVY"]}},
                        headers={"Authorization": f"Bearer {key}"}).status_code == 403
    assert client.get("/v1/admin/settings", headers=_admin(a)).json()["model_tiers"] == mine
    # A's users are held to A's policy, B's to B's.
    with scripted_chat(client.app, [GOOD]):
        assert _oai(client, a, "al", model="auto@HEAVY").json()["error"]["code"] == "tier_not_allowed"
