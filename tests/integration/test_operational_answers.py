"""Agents read SAP and MES: a chat question through POST /v1/chat answered from a live SAP read with a record
citation; history from the extracts; MES machine state; role checks; SAP down → the extract, said so; the
alert root cause written by the agent runtime over MES evidence; and tenant isolation of all of it (each
tenant has its own simulators, with different data)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from connectors.mes_simulator import MESSimulator
from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator
from core.db.database import tenant_session
from core.models import Role
from monitoring import sap_extracts
from monitoring.polling import configure_mes, poll_machines
from tests.builders import post_chat

STOCK_Q = "How much stock of SP-4001 do we have right now?"


def _fmt(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


@pytest.fixture(scope="module")
def env(platform_db, make_tenant_module):
    mp = pytest.MonkeyPatch()
    mp.setenv("EAP_SAP_OPS_PASSWORD", DEFAULT_PASSWORD)
    sap = {"a": SAPSimulator(seed=7).start(), "b": SAPSimulator(seed=8).start()}
    mes = MESSimulator(seed=7).start()
    a, b, c = make_tenant_module("opsa"), make_tenant_module("opsb"), make_tenant_module("opsc")
    for t, sim in ((a, sap["a"]), (b, sap["b"])):
        sap_extracts.configure_sap(t.id, {"base_url": sim.url, "username": DEFAULT_USER, "timeout_s": 2,
                                          "password_env": "EAP_SAP_OPS_PASSWORD", "retries": 0},
                                   actor="test", actor_role="admin")
    configure_mes(a.id, {"base_url": mes.url, "timeout_s": 2, "retries": 0}, actor="test", actor_role="admin")
    yield {"sap": sap, "mes": mes, "a": a, "b": b, "c": c}
    for s in (*sap.values(), mes):
        s.stop()
    mp.undo()


@pytest.fixture(scope="module")
def make_tenant_module(platform_db):
    from identity.tenancy import create_tenant

    return lambda prefix: create_tenant(f"{prefix}-{uuid.uuid4().hex[:10]}")[0]


def _records(body: dict) -> list[dict]:
    return [c for c in body["citations"] if c.get("kind") == "record"]


def test_stock_question_answers_with_the_live_number_and_a_record_citation(client, env):
    a, sim = env["a"], env["sap"]["a"]
    total = sim.stock_of("SP-4001")
    assert total != env["sap"]["b"].stock_of("SP-4001")  # the tenants' systems differ: the test can tell
    body = post_chat(client, a, "vera.viewer", STOCK_Q, role=Role.viewer)
    assert body["specialist"] == "data_analyst" and body["outcome"] == "verified", body["answer"]
    assert f"{_fmt(total)} PC unrestricted in total" in body["answer"]
    recs = _records(body)
    assert recs and {r["system"] for r in recs} == {"SAP"} and {r["entity"] for r in recs} == {"A_MatlStkInAcctMod"}
    assert all("Material='SP-4001'" in r["key"] and r["source"] == "live" for r in recs)
    assert {r["key"].split("Plant='")[1][:4] for r in recs} == {"1010", "1020"}
    as_of = dt.datetime.fromisoformat(recs[0]["as_of"])
    assert abs((dt.datetime.now(dt.UTC) - as_of).total_seconds()) < 120
    assert f"[{recs[0]['n']}]" in body["answer"]
    with tenant_session(a.id) as s:
        details = s.execute(text("SELECT details FROM audit_events WHERE action = 'chat' AND resource_id = :m"),
                            {"m": body["message_id"]}).scalar_one()
        stored = s.execute(text("SELECT citations FROM messages WHERE id = :m"), {"m": body["message_id"]}).scalar()
    assert any("SAP:A_MatlStkInAcctMod:Material='SP-4001'" in k for k in details["cited_records"])
    keys = ("n", "system", "entity", "key", "source")  # the conversation history keeps them
    assert [{k: c[k] for k in keys} for c in stored if c.get("kind") == "record"] == [{k: r[k] for k in keys}
                                                                                      for r in recs]


def test_tenant_isolation_of_live_reads_and_extracts(client, env):
    a, b, c = env["a"], env["b"], env["c"]
    total_a, total_b = env["sap"]["a"].stock_of("SP-4001"), env["sap"]["b"].stock_of("SP-4001")
    body = post_chat(client, b, "bob", STOCK_Q)
    assert f"{_fmt(total_b)} PC unrestricted" in body["answer"] and f"{_fmt(total_a)} PC" not in body["answer"]
    # Tenant C has no SAP: its agent reaches no system and cites no record.
    body = post_chat(client, c, "carl", STOCK_Q)
    assert _records(body) == [] and "sap_not_configured" in str(body["trace"])
    assert f"{_fmt(total_a)} PC" not in body["answer"] and f"{_fmt(total_b)} PC" not in body["answer"]
    # Extracts: A's stock history is visible to A only.
    sap_extracts.extract_inventory(a.id, sap_extracts.client_for(
        {"base_url": env["sap"]["a"].url, "username": DEFAULT_USER, "password_env": "EAP_SAP_OPS_PASSWORD"}))
    q = "How did the stock of SP-4001 develop over the last week?"
    hist_a = post_chat(client, a, "ann", q)
    assert {r["source"] for r in _records(hist_a)} == {"extract"} and f"{_fmt(total_a)} PC" in hist_a["answer"]
    hist_b = post_chat(client, b, "bob", q)  # B has no extract: nothing of A's comes back
    assert _records(hist_b) == [] and "no_extract_data" in str(hist_b["trace"])
    # MES: only A has one; B asking about a machine reads nothing.
    env["mes"].force_down("M-3", reason="hydraulic pressure loss")
    body = post_chat(client, b, "bob", "Is machine M-3 down right now?")
    assert _records(body) == [] and "mes_not_configured" in str(body["trace"])


def test_machine_state_from_mes_for_the_maintenance_questions(client, env):
    env["mes"].force_down("M-3", reason="hydraulic pressure loss")
    body = post_chat(client, env["a"], "max", "Is machine M-3 down right now?")
    recs = _records(body)
    assert body["specialist"] in ("maintenance_advisor", "data_analyst", "quality_inspector")
    assert [(r["system"], r["entity"], r["key"]) for r in recs] == [("MES", "machine", "M-3")]
    assert "DOWN" in body["answer"] and "hydraulic pressure loss" in body["answer"]


def test_cost_centres_need_the_operator_role_and_sap_down_falls_back_to_the_extract(client, env):
    a = env["a"]
    cfg = {"base_url": env["sap"]["a"].url, "username": DEFAULT_USER, "password_env": "EAP_SAP_OPS_PASSWORD"}
    sap_extracts.extract_cost_centers(a.id, sap_extracts.client_for(cfg))
    q = "What is the spend of cost centre 4210 against its budget?"
    viewer = post_chat(client, a, "vic", q, role=Role.viewer)
    assert _records(viewer) == [] and "skill_forbidden" in str(viewer["trace"])
    op = post_chat(client, a, "olga", q, role=Role.operator)
    assert [r["entity"] for r in _records(op)] == ["A_CostCenter"] and "Maintenance" in op["answer"]

    sap_extracts.extract_inventory(a.id, sap_extracts.client_for(cfg))
    env["sap"]["a"].fail_next(20, 503)
    try:
        body = post_chat(client, a, "ann", STOCK_Q)
    finally:
        env["sap"]["a"].state.fail.clear()
    recs = _records(body)
    assert recs and {r["source"] for r in recs} == {"extract"} and "could not be reached live" in body["answer"]
    assert f"{_fmt(env['sap']['a'].stock_of('SP-4001'))} PC" in body["answer"]


def test_alert_root_cause_is_written_by_the_agent_runtime_over_mes_evidence(env):
    from agents import operational
    from monitoring.rules import Rule, evaluate_machines

    a, b = env["a"], env["b"]
    env["mes"].force_down("M-3", reason="hydraulic pressure loss")
    env["mes"].advance(45)
    poll_machines(a.id, {"base_url": env["mes"].url, "timeout_s": 2, "retries": 0}, {})
    from connectors.mes import MESClient

    status = MESClient(env["mes"].url).machine_status()
    (breach,), _ = evaluate_machines([Rule(str(uuid.uuid4()), "downtime", "downtime_minutes", 30, None, "warning")],
                                     status)
    draft = operational.alert_root_cause(a.id, breach)
    assert draft.startswith("Root-cause draft") and "hydraulic pressure loss" in draft
    assert "Evidence: Downtime events recorded from MES for M-3" in draft and "MES downtime_event DT-" in draft
    assert "Analysis (" in draft
    # The same breach drafted for tenant B: B's agent finds none of A's MES evidence.
    other = operational.alert_root_cause(b.id, breach)
    assert "MES downtime_event" not in other and "no downtime events recorded" in other


def test_sap_connection_is_configured_by_an_admin_without_a_stored_password(client, env, make_tenant_module):
    from tests.builders import bearer

    t = make_tenant_module("opsd")
    body = {"base_url": env["sap"]["a"].url, "username": DEFAULT_USER, "password_env": "EAP_SAP_OPS_PASSWORD"}
    assert client.put("/v1/integrations/sap", json=body, headers=bearer(t, "op")).status_code == 403
    r = client.put("/v1/integrations/sap", json={**body, "password": DEFAULT_PASSWORD},
                   headers=bearer(t, "ada", Role.admin))
    assert r.status_code == 422  # a password is never accepted into the settings (or their audit record)
    r = client.put("/v1/integrations/sap", json=body, headers=bearer(t, "ada", Role.admin))
    assert r.status_code == 200, r.text
    assert client.get("/v1/integrations/sap", headers=bearer(t, "ada", Role.admin)).json()["sap"]["username"] == \
        DEFAULT_USER
    answer = post_chat(client, t, "ann", STOCK_Q)
    assert f"{_fmt(env['sap']['a'].stock_of('SP-4001'))} PC" in answer["answer"] and _records(answer)
    with tenant_session(t.id) as s:
        assert DEFAULT_PASSWORD not in str(s.execute(text("SELECT settings FROM tenants")).scalar())


def test_tools_are_typed_with_docstrings_and_offered_by_role():
    from agents import operational, skills
    from agents.tools import tool_schema

    s = tool_schema(operational.sap_material_stock)["function"]
    assert s["description"].startswith("Current unrestricted stock") and s["parameters"]["required"] == ["material"]
    assert set(s["parameters"]["properties"]) == {"material", "plant"}  # the runtime's ctx is not a model argument
    offered = {t["function"]["name"] for t in skills.as_tools("viewer")}
    assert {"sap_material_stock", "mes_machine_status"} <= offered and "sap_cost_centers" not in offered
    assert "sap_cost_centers" in {t["function"]["name"] for t in skills.as_tools("operator")}
    assert operational.select("data_analyst", "What is the scrap rate for 24 defects out of 400 parts?") != \
        "sap_material_stock"
    assert operational.select("procedure_expert", STOCK_Q) is None
