"""Issue 20: tenant admins manage users and roles (created, promoted, deactivated: tokens stop working; all
audited), the last admin stays, a second admin when the tenant's policy says so, the tenant's settings in
one audited section, usage with filters and a daily series; and no admin endpoint reaches another tenant."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from core.db.database import tenant_session
from core.models import Role, UsageRecord
from identity.accounts import set_local_password
from identity.tenancy import ensure_user
from tests.builders import bearer

PASSWORD = "a long enough password"


@pytest.fixture
def tenant(make_tenant):
    t = make_tenant("adm")
    ensure_user(t, "ada", Role.admin)
    return t


def _admin(t, who="ada"):
    return bearer(t, who, Role.admin)


def _audit(t, action=None, outcome=None):
    with tenant_session(t.id) as s:
        rows = s.execute(text("SELECT action, outcome, actor, resource_id, details FROM audit_events "
                              "WHERE tenant_id = :t ORDER BY seq"), {"t": str(t.id)}).mappings().all()
    return [r for r in rows
            if (action is None or r["action"] == action) and (outcome is None or r["outcome"] == outcome)]


def _login(client, t, username):
    r = client.post("/v1/auth/login", json={"tenant": t.name, "username": username, "password": PASSWORD})
    return r


def test_a_user_is_created_promoted_and_deactivated_and_its_tokens_stop_working(client, tenant):
    t = tenant
    r = client.post("/v1/admin/users", json={"username": "vera", "role": "viewer", "groups": ["qa"]},
                    headers=_admin(t))
    assert r.status_code == 201, r.text
    vera = r.json()
    assert vera["role"] == "viewer" and vera["active"] and vera["source"] == "local"
    set_local_password(t, "vera", Role.viewer, PASSWORD, ["qa"])
    tok = {"Authorization": "Bearer " + _login(client, t, "vera").json()["access_token"]}
    me = client.get("/v1/me", headers=tok).json()
    assert me["role"] == "viewer" and me["permissions"] == [] and me["groups"] == ["qa"]

    r = client.patch(f"/v1/admin/users/{vera['id']}", json={"role": "operator", "permissions": ["approver"],
                                                             "groups": ["qa", "rnd"]}, headers=_admin(t))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "operator" and r.json()["permissions"] == ["approver"]
    # The old token keeps its lower role (a token never carries more than it was issued with) but the
    # permissions and groups the admin manages apply at once; a new sign-in carries the promotion.
    me = client.get("/v1/me", headers=tok).json()
    assert me["role"] == "viewer" and me["permissions"] == ["approver"] and me["groups"] == ["qa", "rnd"]
    tok2 = {"Authorization": "Bearer " + _login(client, t, "vera").json()["access_token"]}
    assert client.get("/v1/me", headers=tok2).json()["role"] == "operator"
    # A demotion applies to tokens already issued.
    assert client.patch(f"/v1/admin/users/{vera['id']}", json={"role": "viewer"}, headers=_admin(t)).status_code == 200
    assert client.get("/v1/me", headers=tok2).json()["role"] == "viewer"

    r = client.delete(f"/v1/admin/users/{vera['id']}", headers=_admin(t))
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["deactivated_by"] == "ada"
    for headers in (tok, tok2):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "user_deactivated", r.text
        assert client.get("/v1/conversations", headers=headers).status_code == 401
    assert _login(client, t, "vera").status_code == 401
    # Reactivated: the old tokens stay dead, a new sign-in works.
    assert client.patch(f"/v1/admin/users/{vera['id']}", json={"active": True}, headers=_admin(t)).status_code == 200
    r = client.get("/v1/me", headers=tok2)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    tok3 = {"Authorization": "Bearer " + _login(client, t, "vera").json()["access_token"]}
    assert client.get("/v1/me", headers=tok3).status_code == 200
    # Revoking every session works the same way.
    assert client.post(f"/v1/admin/users/{vera['id']}/revoke-tokens", headers=_admin(t)).status_code == 200
    assert client.get("/v1/me", headers=tok3).json()["error"]["code"] == "token_revoked"

    actions = [(a["action"], a["outcome"]) for a in _audit(t) if a["resource_id"] == vera["id"]]
    for expected in [("user.create", "success"), ("user.update", "success"), ("user.deactivate", "success"),
                     ("user.reactivate", "success"), ("user.revoke_tokens", "success"), ("auth.token", "denied")]:
        assert expected in actions, (expected, actions)
    promoted = next(a for a in _audit(t, "user.update") if a["resource_id"] == vera["id"])
    assert promoted["actor"] == "ada" and promoted["details"]["changes"]["role"] == {"from": "viewer",
                                                                                      "to": "operator"}
    assert client.get(f"/v1/admin/users/{vera['id']}", headers=_admin(t)).json()["active"] is True


def test_unknown_roles_and_permissions_are_refused_and_audited(client, tenant):
    t = tenant
    for body, code in (({"username": "x", "role": "superuser"}, "unknown_role"),
                       ({"username": "x", "permissions": ["root"]}, "unknown_permission"),
                       ({"username": "oidc:someone"}, "invalid_username")):
        r = client.post("/v1/admin/users", json=body, headers=_admin(t))
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert client.post("/v1/admin/users", json={"username": "dup"}, headers=_admin(t)).status_code == 201
    r = client.post("/v1/admin/users", json={"username": "dup"}, headers=_admin(t))
    assert r.status_code == 409 and r.json()["error"]["code"] == "user_exists"
    uid = client.get("/v1/admin/users", headers=_admin(t)).json()[0]["id"]
    r = client.patch(f"/v1/admin/users/{uid}", json={"role": "owner"}, headers=_admin(t))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_role"
    codes = [a["details"]["code"] for a in _audit(t, outcome="denied") if a["action"].startswith("user.")]
    assert codes == ["unknown_role", "unknown_permission", "invalid_username", "user_exists", "unknown_role"]
    # Non-admins have no admin API at all.
    r = client.get("/v1/admin/users", headers=bearer(t, "olaf", Role.operator))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"


def test_the_last_admin_cannot_be_demoted_or_deactivated(client, tenant):
    t = tenant
    users = {u["username"]: u for u in client.get("/v1/admin/users", headers=_admin(t)).json()}
    ada = users["ada"]["id"]
    for call in (lambda: client.patch(f"/v1/admin/users/{ada}", json={"role": "operator"}, headers=_admin(t)),
                 lambda: client.patch(f"/v1/admin/users/{ada}", json={"active": False}, headers=_admin(t)),
                 lambda: client.delete(f"/v1/admin/users/{ada}", headers=_admin(t))):
        r = call()
        assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin", r.text
    assert len(_audit(t, "user.update", "denied")) == 3
    bob = client.post("/v1/admin/users", json={"username": "bob", "role": "admin"}, headers=_admin(t)).json()
    assert client.patch(f"/v1/admin/users/{ada}", json={"role": "operator"}, headers=_admin(t)).status_code == 200
    # ada is no admin any more (her token acts as operator at most): bob is now the last one.
    assert client.get("/v1/admin/users", headers=_admin(t)).status_code == 403
    r = client.delete(f"/v1/admin/users/{bob['id']}", headers=_admin(t, "bob"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin"


def test_granting_yourself_a_permission_needs_a_second_admin_when_the_policy_says_so(client, tenant):
    t = tenant
    ada = next(u for u in client.get("/v1/admin/users", headers=_admin(t)).json() if u["username"] == "ada")
    ensure_user(t, "bob", Role.admin)
    r = client.patch("/v1/admin/settings", json={"identity_policy": {"self_grant_requires_second_admin": True}},
                     headers=_admin(t))
    assert r.status_code == 200 and r.json()["identity_policy"] == {"self_grant_requires_second_admin": True}
    r = client.patch(f"/v1/admin/users/{ada['id']}", json={"permissions": ["compliance_officer"]}, headers=_admin(t))
    assert r.status_code == 403 and r.json()["error"]["code"] == "second_admin_required"
    assert _audit(t, "user.update", "denied")[-1]["details"]["permissions"] == ["compliance_officer"]
    r = client.patch(f"/v1/admin/users/{ada['id']}", json={"permissions": ["compliance_officer"]},
                     headers=_admin(t, "bob"))
    assert r.status_code == 200 and r.json()["permissions"] == ["compliance_officer"]
    assert "compliance_officer" in client.get("/v1/me", headers=_admin(t)).json()["permissions"]


def test_tenant_settings_in_one_audited_admin_section(client, tenant, make_tenant):
    t = tenant
    rules = {"rules": [{"name": "long stop", "kind": "downtime_minutes", "threshold": 30},
                       {"name": "scrap", "kind": "defect_rate", "threshold": 0.05}]}
    assert client.put("/v1/alert-rules", json=rules, headers=_admin(t)).status_code == 200
    r = client.patch("/v1/admin/settings", json={
        "rate_limit_per_minute": 90, "budgets": {"daily_tokens": 5000, "on_exceed": "extractive"},
        "alert_thresholds": {"long stop": 45}}, headers=_admin(t))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rate_limit_per_minute"] == 90
    assert body["budgets"] == {"daily_tokens": 5000, "on_exceed": "extractive"}
    assert body["alert_thresholds"] == {"long stop": 45.0, "scrap": 0.05}
    assert client.get("/v1/alert-rules", headers=_admin(t)).json()[0]["threshold"] == 45.0
    for bad, code in (({"alert_thresholds": {"no such rule": 1}}, "unknown_alert_rule"),
                      ({"alert_thresholds": {"scrap": 5}}, "invalid_threshold")):
        r = client.patch("/v1/admin/settings", json=bad, headers=_admin(t))
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert client.patch("/v1/admin/settings", json={"rate_limit_per_minute": 0}, headers=_admin(t)).status_code == 422
    assert client.get("/v1/admin/settings", headers=_admin(t)).json()["rate_limit_per_minute"] == 90
    audited = {a["action"]: a["details"] for a in _audit(t, outcome="success")
               if a["action"].startswith("tenant.settings.")}
    rate = audited["tenant.settings.rate_limit_per_minute"]
    assert (rate["from"], rate["to"]) == (None, 90)
    assert audited["tenant.settings.alert_thresholds"]["to"] == 45
    assert [a["details"]["code"] for a in _audit(t, "tenant.settings.alert_thresholds", "denied")] == [
        "unknown_alert_rule", "invalid_threshold"]
    # Another tenant's settings are its own.
    other = make_tenant("adm")
    theirs = client.get("/v1/admin/settings", headers=_admin(other)).json()
    assert theirs["rate_limit_per_minute"] is None and theirs["alert_thresholds"] == {}


def test_usage_filters_by_user_specialist_and_period_with_a_daily_series(client, tenant):
    t = tenant
    now = dt.datetime.now(dt.UTC)
    rows = [("vera", "document_analyst", 0, 100), ("vera", "production_analyst", 0, 10),
            ("olaf", "document_analyst", 1, 1000), ("vera", "document_analyst", 3, 7), ("olaf", "x", 40, 5)]
    with tenant_session(t.id) as s:
        for user, agent, days_ago, tokens in rows:
            s.add(UsageRecord(tenant_id=t.id, user_subject=user, agent=agent, tier="LIGHT", model="m",
                              prompt_tokens=tokens, completion_tokens=0, cost=tokens / 1000,
                              created_at=now - dt.timedelta(days=days_ago)))
    r = client.get("/v1/usage", params={"group_by": "user", "series": "daily"}, headers=_admin(t)).json()
    assert {row["key"]: row["prompt_tokens"] for row in r["rows"]} == {"vera": 117, "olaf": 1000}
    assert [d["prompt_tokens"] for d in r["series"]] == [7, 1000, 110]
    assert r["series"][-1]["day"] == now.date().isoformat()
    r = client.get("/v1/usage", params={"user": "vera", "specialist": "document_analyst", "series": "daily"},
                   headers=_admin(t)).json()
    assert r["total_tokens"] == 107 and [d["prompt_tokens"] for d in r["series"]] == [7, 100]
    period = {"from": (now - dt.timedelta(days=2)).isoformat(), "to": (now - dt.timedelta(hours=12)).isoformat()}
    r = client.get("/v1/usage", params={**period, "group_by": "user"}, headers=_admin(t)).json()
    assert [(row["key"], row["prompt_tokens"]) for row in r["rows"]] == [("olaf", 1000)]
    # Everyone else sees their own use only, whatever they ask for.
    r = client.get("/v1/usage", params={"user": "olaf", "group_by": "user"}, headers=bearer(t, "vera")).json()
    assert [row["key"] for row in r["rows"]] == ["vera"]
    bad = client.get("/v1/usage", params={"from": now.isoformat(), "to": (now - dt.timedelta(days=1)).isoformat()},
                     headers=_admin(t))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_period"


def test_a_tenant_admin_cannot_see_or_change_another_tenants_users(client, tenant, make_tenant):
    """Every admin endpoint, attacked with the other tenant's ids: 404 (as for ids that do not exist), never
    its data, and nothing of the other tenant changes."""
    a, b = tenant, make_tenant("adm")
    ensure_user(b, "eve", Role.admin)
    victim = client.post("/v1/admin/users", json={"username": "victim", "role": "operator", "groups": ["secret"]},
                         headers=_admin(a)).json()
    key = client.post("/v1/admin/api-keys", json={"name": "erp", "allowed_prefixes": ["/v1/me"]},
                      headers=_admin(a)).json()
    assert client.patch("/v1/admin/settings", json={"rate_limit_per_minute": 77}, headers=_admin(a)).status_code == 200
    eve = _admin(b, "eve")
    attacks = [
        client.get(f"/v1/admin/users/{victim['id']}", headers=eve),
        client.patch(f"/v1/admin/users/{victim['id']}", json={"role": "admin"}, headers=eve),
        client.patch(f"/v1/admin/users/{victim['id']}", json={"active": False}, headers=eve),
        client.delete(f"/v1/admin/users/{victim['id']}", headers=eve),
        client.post(f"/v1/admin/users/{victim['id']}/revoke-tokens", headers=eve),
        client.delete(f"/v1/admin/api-keys/{key['id']}", headers=eve),
    ]
    for r in attacks:
        assert r.status_code == 404, r.text
        assert "victim" not in r.text and "secret" not in r.text
    listed = client.get("/v1/admin/users", headers=eve).json()
    assert [u["username"] for u in listed] == ["eve"]
    assert client.get("/v1/admin/api-keys", headers=eve).json() == []
    assert client.get("/v1/admin/settings", headers=eve).json()["rate_limit_per_minute"] is None
    assert client.get("/v1/admin/idp-mapping", headers=eve).json() == {"rules": [], "default_role": None}
    # Creating a user of the same name in B makes B's own user, not A's.
    mine = client.post("/v1/admin/users", json={"username": "victim"}, headers=eve).json()
    assert mine["id"] != victim["id"] and mine["role"] == "viewer"
    # A forged token for tenant B naming tenant A's id in its path changes nothing either: A is intact.
    after = client.get(f"/v1/admin/users/{victim['id']}", headers=_admin(a)).json()
    assert after["role"] == "operator" and after["active"] is True
    assert client.get("/v1/admin/api-keys", headers=_admin(a)).json()[0]["revoked_at"] is None
    assert client.get(f"/v1/admin/users/{uuid.uuid4()}", headers=_admin(a)).status_code == 404
    denied = [x for x in _audit(b, "access.denied") if x["details"]["status"] == 404]
    assert len(denied) == len(attacks)
