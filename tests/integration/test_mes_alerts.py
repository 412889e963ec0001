"""Shift alerts end to end: MES simulator → real Dagster sensor ticks → the triggered alert job →
webhook (local HTTP receiver) and e-mail (aiosmtpd sink), plus the alert API."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from connectors.mes_simulator import MESSimulator
from core.db.database import tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import SmtpSink, Webhook, free_port


@pytest.fixture(scope="module")
def env(platform_db):
    from serving.app import create_app

    sink = SmtpSink()
    hook = Webhook()
    sims = {"a": MESSimulator(seed=7).start(), "b": MESSimulator(seed=8).start()}
    with TestClient(create_app()) as client:
        yield {"client": client, "sink": sink, "hook": hook, "sims": sims}
    for sim in sims.values():
        sim.stop()
    hook.srv.shutdown()
    sink.close()


def _h(t, role=Role.admin):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role,
                                                    subject=f"{role.value}@{t.name}")}


class Monitor:
    """The two MES sensors and the alert job, driven the way the Dagster daemon drives them."""

    def __init__(self) -> None:
        import definitions
        from sensors.mes import mes_sensors

        self.inst = dg.DagsterInstance.ephemeral()
        self.status, self.quality = mes_sensors()
        self.cursors = {"status": None, "quality": None}
        self.job = definitions.defs.resolve_job_def("mes_alert_job")
        self.resources = {"db": definitions.defs.resources["db"]}
        self.run_keys: set[str] = set()

    def tick(self, which: str = "status"):
        sensor = self.status if which == "status" else self.quality
        ctx = dg.build_sensor_context(instance=self.inst, cursor=self.cursors[which], resources=self.resources)
        res = sensor(ctx)
        if isinstance(res, dg.SkipReason):
            self.cursors[which] = ctx.cursor
            return res, []
        self.cursors[which] = res.cursor
        results = []
        for rr in res.run_requests:
            if rr.run_key in self.run_keys:  # the daemon never launches a run key twice
                continue
            self.run_keys.add(rr.run_key)
            results.append(self.job.execute_in_process(run_config=rr.run_config, instance=self.inst,
                                                       resources=self.resources))
        return res, results


def _setup(env, make_tenant, sim_key, rules, mes_cfg=None):
    t = make_tenant(f"mes{sim_key}")
    c = env["client"]
    r = c.put("/v1/integrations/mes", json={"base_url": env["sims"][sim_key].url, "timeout_s": 1, "retries": 0,
                                           **(mes_cfg or {})}, headers=_h(t))
    assert r.status_code == 200, r.text
    if rules is not None:
        r = c.put("/v1/alert-rules", json={"rules": rules}, headers=_h(t))
        assert r.status_code == 200, r.text
    return t


def _alerts(t):
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT subject, status, severity, root_cause, notify_count FROM alerts "
                              "ORDER BY opened_at")).all()


def test_machine_down_over_30_minutes_alerts_once_by_webhook_and_email(env, make_tenant):
    hook, sink = env["hook"], env["sink"]
    sim_a = MESSimulator(seed=7).start()
    sim_b = MESSimulator(seed=8).start()
    env["sims"]["a"], env["sims"]["b"] = sim_a, sim_b
    rules = [{"name": "downtime", "kind": "downtime_minutes", "threshold": 30, "severity": "warning",
              "channels": {"webhooks": [hook.url], "emails": ["shift.lead@plant.local"]}}]
    a = _setup(env, make_tenant, "a", rules)
    b = _setup(env, make_tenant, "b", None)  # tenant B: its own MES, no rules
    mon = Monitor()
    posts0, mails0 = len(hook.posts), len(sink.messages)

    sim_a.force_down("M-3", reason="hydraulic pressure loss")
    sim_b.force_down("M-1", reason="jam")
    sim_a.advance(20)
    sim_b.advance(40)
    skip, runs = mon.tick()
    assert runs == [] and "no new breaches" in skip.skip_message  # 20 min: under the limit

    sim_a.advance(11)  # 31 min down
    _, runs = mon.tick()
    assert len(runs) == 1 and runs[0].success
    alerts = _alerts(a)
    assert [(x.subject, x.status, x.severity) for x in alerts] == [("M-3", "open", "warning")]
    assert "Root-cause draft" in alerts[0].root_cause and "hydraulic pressure loss" in alerts[0].root_cause
    assert len(hook.posts) - posts0 == 1 and len(sink.messages) - mails0 == 1
    post = hook.posts[-1]
    assert post["severity"] == "warning" and "M-3" in post["title"] and "Root-cause draft" in post["text"]
    mail = sink.messages[-1]
    assert mail.rcpt_tos == ["shift.lead@plant.local"] and b"Root-cause draft" in mail.content

    # Next tick: still down, still one alert, nothing re-sent.
    sim_a.advance(5)
    _, runs = mon.tick()
    assert runs == [] and len(_alerts(a)) == 1 and len(hook.posts) - posts0 == 1
    # Tenant isolation: B's machine has been down 46 minutes; A's rule never fires on it.
    assert _alerts(b) == []
    with tenant_session(a.id) as s:
        assert s.execute(text("SELECT count(*) FROM mes_observations WHERE payload->>'reason' = 'jam'")).scalar() == 0

    # Escalation at twice the limit: one more notification, severity critical.
    sim_a.advance(30)  # 66 min
    _, runs = mon.tick()
    assert len(runs) == 1
    alerts = _alerts(a)
    assert len(alerts) == 1 and alerts[0].severity == "critical" and alerts[0].notify_count == 4
    assert hook.posts[-1]["title"].startswith("[CRITICAL] ESCALATED")

    # Back up: the alert resolves itself (audited).
    sim_a.restore("M-3")
    mon.tick()
    assert _alerts(a)[0].status == "resolved"
    with tenant_session(a.id) as s:
        actor = s.execute(text("SELECT actor FROM audit_events WHERE action = 'alert.resolved'")).scalar()
    assert actor == "mes-monitor"


def test_mes_timeouts_and_garbage_give_reasons_and_lose_nothing(env, make_tenant):
    hook = env["hook"]
    sim = MESSimulator(seed=9).start()
    env["sims"]["c"] = sim
    rules = [{"name": "downtime", "kind": "downtime_minutes", "threshold": 30, "channels": {"webhooks": [hook.url]}}]
    t = _setup(env, make_tenant, "c", rules, {"timeout_s": 0.3})
    mon = Monitor()
    sim.force_down("M-2", reason="spindle overload")
    sim.advance(45)

    sim.slow(1.0)
    skip, runs = mon.tick()
    assert runs == [] and "timed out" in skip.skip_message and t.name in skip.skip_message
    sim.slow(0)
    sim.set_garbage(True)
    skip, runs = mon.tick()
    assert runs == [] and "invalid response" in skip.skip_message
    assert _alerts(t) == []

    sim.set_garbage(False)  # MES recovers: the downtime that happened meanwhile is caught
    _, runs = mon.tick()
    assert len(runs) == 1 and runs[0].success
    assert [(a.subject, a.status) for a in _alerts(t)] == [("M-2", "open")]
    with tenant_session(t.id) as s:
        reasons = s.execute(text("SELECT payload->>'reason' FROM mes_observations WHERE kind = 'downtime'")).scalars()
        assert list(reasons) == ["spindle overload"]
    sim.stop()


def test_defect_rate_rule_and_dead_letter(env, make_tenant):
    sim = MESSimulator(seed=10).start()
    env["sims"]["d"] = sim
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    rules = [{"name": "defects", "kind": "defect_rate", "threshold": 0.05, "scope": "L2", "severity": "critical",
              "channels": {"webhooks": [dead]}}]
    t = _setup(env, make_tenant, "d", rules)
    mon = Monitor()
    sim.set_defect_rate("L2", 0.09)
    sim.set_defect_rate("L1", 0.2)  # out of the rule's scope
    sim.advance(61)
    _, runs = mon.tick("quality")
    assert len(runs) == 1 and runs[0].success
    alerts = _alerts(t)
    assert [(a.subject, a.severity) for a in alerts] == [("L2", "critical")]
    assert "Recent defect rates on line L2" in alerts[0].root_cause
    r = env["client"].get("/v1/alerts", headers=_h(t, Role.viewer))
    deliveries = r.json()[0]["deliveries"]
    assert [(d["channel"], d["status"], d["attempts"]) for d in deliveries] == [("webhook", "dead_letter", 3)]
    sim.stop()


def test_alert_api_permissions_and_audit(env, make_tenant):
    c = env["client"]
    t = make_tenant("api")
    good = [{"name": "down", "kind": "downtime_minutes", "threshold": 30},
            {"name": "stock", "kind": "inventory_below_min", "threshold": 100, "scope": "MAT-1001"}]
    assert c.put("/v1/alert-rules", json={"rules": good}, headers=_h(t, Role.operator)).status_code == 403
    assert c.get("/v1/alert-rules", headers=_h(t, Role.viewer)).status_code == 403
    for bad in ([{"name": "x", "kind": "defect_rate", "threshold": 5}],
                [{"name": "x", "kind": "nope", "threshold": 1}],
                [{"name": "x", "kind": "downtime_minutes", "threshold": 30}] * 2,
                [{"name": "x", "kind": "downtime_minutes", "threshold": 30, "channels": {"emails": ["not-an-email"]}}]):
        assert c.put("/v1/alert-rules", json={"rules": bad}, headers=_h(t)).status_code == 422
    r = c.put("/v1/alert-rules", json={"rules": good}, headers=_h(t))
    assert r.status_code == 200 and [x["name"] for x in r.json()] == ["down", "stock"]
    ids = {x["name"]: x["id"] for x in r.json()}
    r = c.put("/v1/alert-rules", json={"rules": good[:1]}, headers=_h(t))
    assert [x["id"] for x in r.json()] == [ids["down"]]  # kept its id; 'stock' removed
    assert c.post(f"/v1/alerts/{uuid.uuid4()}/acknowledge", headers=_h(t, Role.operator)).status_code == 404
    assert c.post(f"/v1/alerts/{uuid.uuid4()}/acknowledge", headers=_h(t, Role.viewer)).status_code == 403
    # An alert of another tenant cannot be acknowledged from here.
    other = make_tenant("other")
    from monitoring.alerts import raise_alert
    from monitoring.rules import Breach

    rules_other = c.put("/v1/alert-rules", json={"rules": good[:1]}, headers=_h(other)).json()
    alert, action = raise_alert(other.id, Breach(rules_other[0]["id"], "down", "downtime_minutes", "M-9", 45, 30,
                                                 "warning", "e1", "M-9 down 45 min", {"machine_id": "M-9"}))
    assert action == "opened"
    assert c.post(f"/v1/alerts/{alert.id}/acknowledge", headers=_h(t, Role.operator)).status_code == 404
    r = c.post(f"/v1/alerts/{alert.id}/acknowledge", headers=_h(other, Role.operator))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    with tenant_session(other.id) as s:
        ev = s.execute(text("SELECT actor FROM audit_events WHERE action = 'alert.acknowledged'")).scalar()
    assert ev == f"operator@{other.name}"
