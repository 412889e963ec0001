"""SQL Guard over the reporting views, end to end: MES simulator → the monitoring's own polling stores
observations → the reporting views (security_invoker: RLS holds) → guarded queries as the application role in a
READ ONLY transaction → answers in chat (template SQL with the extractive responder, model-written SQL with a
scripted model), every query audited with its reason."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from compliance import sqlguard
from connectors.mes_simulator import MESSimulator
from core.db.database import app_engine, tenant_session
from core.models import Role
from monitoring import polling
from tests.builders import bearer, scripted_chat


def _store(t, sim):
    cfg = {"base_url": sim.url, "timeout_s": 2, "retries": 0}
    polling.poll_machines(t.id, cfg, {})
    polling.poll_quality(t.id, cfg, {})


@pytest.fixture(scope="module")
def plant(platform_db):
    import uuid

    from identity.tenancy import create_tenant

    sims = {"a": MESSimulator(seed=7).start(), "b": MESSimulator(seed=8).start()}
    a, _ = create_tenant(f"sqla-{uuid.uuid4().hex[:8]}")
    b, _ = create_tenant(f"sqlb-{uuid.uuid4().hex[:8]}")
    sims["a"].force_down("M-2", reason="hydraulic leak")
    sims["a"].force_down("M-5", reason="tool break")
    sims["b"].force_down("M-1", reason="jam")
    for sim in sims.values():
        sim.advance(125)  # two full hours: two quality reports per line
    sims["a"].restore("M-5")  # ended downtime event: a duration
    sims["a"].set_defect_rate("L2", 0.05)
    sims["a"].advance(60)
    _store(a, sims["a"])
    _store(b, sims["b"])
    yield a, b, sims
    for sim in sims.values():
        sim.stop()


def _audit(t, action="sql.query"):
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT actor, outcome, details FROM audit_events WHERE action = :a ORDER BY seq"),
                         {"a": action}).all()


def test_views_answer_under_rls_as_the_application_role(plant):
    a, b, _ = plant
    res_a = sqlguard.run(app_engine(), a.id, actor="ana", role="viewer", sql="SELECT machine_id, line FROM "
                         "machine_status WHERE state = :s ORDER BY machine_id LIMIT 50", params={"s": "DOWN"})
    res_b = sqlguard.run(app_engine(), b.id, actor="ben", role="viewer", sql="SELECT machine_id, line FROM "
                         "machine_status WHERE state = :s ORDER BY machine_id LIMIT 50", params={"s": "DOWN"})
    assert [r[0] for r in res_a.rows] == ["M-2"]  # M-5 was restored before the poll
    assert [r[0] for r in res_b.rows] == ["M-1"]  # the other tenant's machine, never A's
    assert res_a.columns == ["machine_id", "line"] and res_a.views == ("machine_status",)
    # The view is security_invoker: read directly as the app role, tenant B still sees only its own rows.
    with tenant_session(b.id) as s:
        ids = s.execute(text("SELECT DISTINCT machine_id FROM reporting.machine_status WHERE state = 'DOWN'")).all()
    assert [r[0] for r in ids] == ["M-1"]
    q = sqlguard.run(app_engine(), a.id, actor="ana", role="viewer",
                     sql="SELECT machine_id, duration_minutes FROM downtime_events WHERE ended_at IS NOT NULL LIMIT 5")
    assert q.rows == [["M-5", 125.0]]


def test_app_role_has_only_select_on_the_reporting_schema(plant):
    a, _, _ = plant
    with app_engine().connect() as conn:
        privileges = conn.execute(text(
            "SELECT bool_or(has_table_privilege(current_user, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE')), "
            "bool_and(has_table_privilege(current_user, c.oid, 'SELECT')), "
            "has_schema_privilege(current_user, 'reporting', 'CREATE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reporting'")).one()
    assert tuple(privileges) == (False, True, False)


def test_every_query_is_audited_accepted_or_refused(plant):
    a, _, _ = plant
    before = len(_audit(a))
    sqlguard.run(app_engine(), a.id, actor="ana", role="viewer", sql="SELECT line FROM quality_reports LIMIT 3")
    for sql, reason in (("SELECT username FROM users LIMIT 5", "relation_not_allowed"),
                        ("SELECT pg_sleep(5) AS s FROM machine_status LIMIT 1", "function_not_allowed"),
                        ("SELECT machine_id FROM machine_status", "limit_required")):
        with pytest.raises(sqlguard.SQLRefused) as info:
            sqlguard.run(app_engine(), a.id, actor="ana", role="viewer", sql=sql)
        assert info.value.reason == reason
    rows = _audit(a)[before:]
    assert [(r.actor, r.outcome) for r in rows] == [("ana", "success"), ("ana", "denied"), ("ana", "denied"),
                                                    ("ana", "denied")]
    assert rows[0].details["rows"] == 3 and "reporting.quality_reports" in rows[0].details["executed_sql"]
    assert [r.details["reason"] for r in rows[1:]] == ["relation_not_allowed", "function_not_allowed",
                                                       "limit_required"]
    assert rows[1].details["sql"] == "SELECT username FROM users LIMIT 5"


def test_the_query_runs_read_only_with_a_timeout_as_the_regenerated_sql(plant):
    """What reaches PostgreSQL (observed on the application role's engine): the transaction is made READ ONLY
    before anything else, the tenant and a statement timeout are set for it only, and the SQL is the regenerated
    one — and a write in such a transaction is refused by PostgreSQL itself (defence in depth)."""
    import sqlalchemy as sa

    a, _, _ = plant
    seen: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    eng = app_engine()
    sa.event.listen(eng, "before_cursor_execute", capture)
    try:
        res = sqlguard.run(eng, a.id, actor="ana", role="viewer", sql="select line from quality_reports limit 2")
    finally:
        sa.event.remove(eng, "before_cursor_execute", capture)
    assert seen[0] == "SET TRANSACTION READ ONLY"
    assert "eap.tenant_id" in seen[1] and "statement_timeout" in seen[2]
    assert seen[3] == res.sql == "SELECT line FROM reporting.quality_reports LIMIT 2"
    with eng.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            conn.exec_driver_sql("CREATE TEMP TABLE sneaky (x int)")


def test_chat_structured_question_is_answered_from_the_reporting_views(plant, client):
    a, _, sims = plant
    body = client.post("/v1/chat", json={"message": "How many machines are down on each line right now?"},
                       headers=bearer(a, "ana", Role.viewer))
    assert body.status_code == 200, body.text
    out = body.json()
    assert "1 machine(s) are DOWN" in out["answer"] and "line L1: 1" in out["answer"]
    sql_steps = [s for s in out["trace"] if s.get("tool") == "sql_query"]
    assert sql_steps and sql_steps[0]["result"]["author"] == "template"
    assert "reporting.machine_status" in sql_steps[0]["result"]["sql"]
    assert out["outcome"] == "verified"
    assert any(r.details.get("purpose") == "chat: machines_by_state" and r.outcome == "success" for r in _audit(a))
    r = client.post("/v1/chat", json={"message": "What is the defect rate per line?"},
                    headers=bearer(a, "ana", Role.viewer))
    answer = r.json()["answer"]
    expected = round(sum(q["defects"] for q in sims["a"].state.quality if q["line"] == "L2")
                     / sum(q["inspected"] for q in sims["a"].state.quality if q["line"] == "L2"), 4)
    assert f"line L2: {expected}" in answer, answer


def test_model_written_sql_is_checked_by_the_guard(plant, client):
    a, _, _ = plant
    attack = "SELECT machine_id FROM machine_status UNION SELECT username FROM users LIMIT 50"
    with scripted_chat(client.app, [attack, "The query was refused [1]."]) as model:
        r = client.post("/v1/chat", json={"message": "Which machines are down at the moment?"},
                        headers=bearer(a, "ana", Role.viewer))
    assert r.status_code == 200, r.text
    step = next(s for s in r.json()["trace"] if s.get("tool") == "sql_query")
    assert step["denied"] == "set_operation" and step["result"]["author"] == "model"
    refused = [x for x in _audit(a) if x.outcome == "denied" and x.details.get("author") == "model"]
    assert refused and refused[-1].details["sql"] == attack
    assert "username" not in r.json()["answer"].lower() or "refused" in r.json()["answer"].lower()
    # The prompt that asked for the SQL listed only the views and columns a viewer may read.
    asked = model.requests[0]["messages"][0]["content"]
    assert "reporting.machine_status" in asked and "reason" not in asked.split("machine_status(")[1].split(")")[0]

    good = "SELECT machine_id, line FROM machine_status WHERE state = 'DOWN' LIMIT 10"
    with scripted_chat(client.app, [good, "Machine M-2 on line L1 is down [1]."]):
        r = client.post("/v1/chat", json={"message": "Which machines are down at the moment?"},
                        headers=bearer(a, "ana", Role.viewer))
    step = next(s for s in r.json()["trace"] if s.get("tool") == "sql_query")
    assert step["result"]["rows"] == 1 and "denied" not in step
    assert "M-2" in r.json()["answer"]


def _sap_rows(t, rows_by_time, materials):
    with tenant_session(t.id) as s:
        for at, rows in rows_by_time.items():
            for material, plant, sloc, qty in rows:
                s.execute(text("INSERT INTO sap_stock (tenant_id, extracted_at, material, plant, storage_location, "
                               "stock_type, quantity, unit) VALUES (:t, :at, :m, :p, :l, '01', :q, 'PC')"),
                          {"t": str(t.id), "at": at, "m": material, "p": plant, "l": sloc, "q": qty})
        for material, plant, reorder in materials:
            s.execute(text("INSERT INTO sap_materials (tenant_id, extracted_at, material, plant, description, "
                           "product_type, product_group, base_unit, reorder_point, safety_stock) VALUES (:t, now(), "
                           ":m, :p, :m, 'ERSA', 'SP', 'PC', :r, 0)"), {"t": str(t.id), "m": material, "p": plant,
                                                                        "r": reorder})


def test_sap_extract_views_answer_a_structured_question_per_tenant(plant, client):
    import datetime as dt

    a, b, _ = plant
    old, new = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    # Tenant A: SP-4001 was plentiful in the older extract and is low in the latest one (two bins: 7 + 5).
    _sap_rows(a, {old: [("SP-4001", "1010", "0001", 400), ("SP-4002", "1010", "0001", 90)],
                  new: [("SP-4001", "1010", "0001", 7), ("SP-4001", "1010", "0002", 5),
                        ("SP-4002", "1010", "0001", 80)]},
              [("SP-4001", "1010", 20), ("SP-4002", "1010", 50)])
    # Tenant B: its own material far below its reorder point; A must never see it.
    _sap_rows(b, {new: [("SP-9999", "2020", "0001", 1)]}, [("SP-9999", "2020", 500)])
    r = client.post("/v1/chat", json={"message": "Which materials are below their reorder point?"},
                    headers=bearer(a, "ana", Role.viewer))
    assert r.status_code == 200, r.text
    out = r.json()
    step = next(s for s in out["trace"] if s.get("tool") == "sql_query")
    assert step["result"]["template"] == "materials_below_reorder_point" and step["result"]["rows"] == 1
    assert "SP-4001 at plant 1010: 12.0 PC (reorder point 20.0)" in out["answer"], out["answer"]
    assert "SP-9999" not in out["answer"] and "SP-4002" not in out["answer"]
    # Viewers may not read SAP purchase prices; admins may.
    with pytest.raises(sqlguard.SQLRefused) as info:
        sqlguard.run(app_engine(), a.id, actor="ana", role="viewer",
                     sql="SELECT purchase_order FROM sap_open_purchase_orders LIMIT 5")
    assert info.value.reason == "view_not_allowed"
    with pytest.raises(sqlguard.SQLRefused) as info:
        sqlguard.run(app_engine(), a.id, actor="olga", role="operator",
                     sql="SELECT purchase_order, net_price FROM sap_open_purchase_orders LIMIT 5")
    assert info.value.reason == "column_not_allowed"
    assert sqlguard.run(app_engine(), a.id, actor="root", role="admin",
                        sql="SELECT purchase_order, net_price FROM sap_open_purchase_orders LIMIT 5").rows == []


def test_an_empty_answer_over_mes_data_never_collected_says_so(client, make_tenant):
    """A tenant whose MES was never polled has no machine status: "no machine is down" would be a false
    statement. The answer says the data is missing instead."""
    from tests.builders import post_chat

    t = make_tenant("nomes")
    res = post_chat(client, t, "otto", "Which machines are down right now?")
    assert "No machine status data has been recorded for this tenant yet" in res["answer"]
    assert "No machine is DOWN" not in res["answer"]


def _markers_resolve(out):
    """Every [n] of the answer has at least one citation with that number."""
    import re

    marks = {int(m) for m in re.findall(r"\[(\d{1,2})\]", out["answer"])}
    assert marks, out["answer"]
    assert marks <= {c["n"] for c in out["citations"]}, (out["answer"], out["citations"])


def test_sql_and_calculator_answers_cite_the_query_and_the_formula(plant, client):
    a, _, _ = plant
    r = client.post("/v1/chat", json={"message": "How many machines are down on each line right now?"},
                    headers=bearer(a, "ana", Role.viewer))
    out = r.json()
    _markers_resolve(out)
    q = next(c for c in out["citations"] if c["kind"] == "query")
    step = next(s for s in out["trace"] if s.get("tool") == "sql_query")
    assert q["system"] == "MES" and q["entity"] == "reporting.machine_status"
    assert q["query"] == step["result"]["sql"] and "reporting.machine_status" in q["query"]
    assert q["rows"] == step["result"]["rows"] >= 1 and q["as_of"] and q["author"] == "template"

    r = client.post("/v1/chat", json={"message": "What is 12.5 * 4 + 3?"}, headers=bearer(a, "ana", Role.viewer))
    out = r.json()
    assert "= 53" in out["answer"], out["answer"]
    _markers_resolve(out)
    calc = next(c for c in out["citations"] if c["kind"] == "calculation")
    assert calc["formula"].replace(" ", "") == "12.5*4+3" and calc["inputs"] == [12.5, 4, 3]
    assert calc["result"] == 53

    # A refused model-written query is cited too: the refused SQL and the reason behind the [n].
    attack = "SELECT machine_id FROM machine_status UNION SELECT username FROM users LIMIT 50"
    with scripted_chat(client.app, [attack, "The query was refused [1]."]):
        out = client.post("/v1/chat", json={"message": "Which machines are down at the moment?"},
                          headers=bearer(a, "ana", Role.viewer)).json()
    n = len([c for c in out["citations"] if c["kind"] == "document"])
    cited = [c for c in out["citations"] if c["kind"] == "query"]
    assert cited and cited[0]["refused"] == "set_operation" and cited[0]["query"] == attack and n == 0


def test_a_permitted_but_slow_query_hits_the_statement_timeout(plant, client, monkeypatch):
    """A query the guard accepts (one SELECT over allowed views, LIMIT 1) but that multiplies the rows of a view
    eight times over: the statement timeout cancels it, the user gets an answer saying so (no 500), and the
    failure is audited with its reason."""
    a, _, _ = plant
    monkeypatch.setattr(sqlguard, "STATEMENT_TIMEOUT_MS", 150)
    slow = "SELECT count(*) AS n FROM " + " CROSS JOIN ".join(f"quality_reports AS q{i}" for i in range(8)) + " LIMIT 1"
    sqlguard.check(slow, "viewer")  # permitted: nothing but the timeout stops it
    with scripted_chat(client.app, [slow, "The query timed out [1]."]):
        r = client.post("/v1/chat", json={"message": "Which machines are down at the moment?"},
                        headers=bearer(a, "ana", Role.viewer))
    assert r.status_code == 200, r.text
    out = r.json()
    step = next(s for s in out["trace"] if s.get("tool") == "sql_query")
    assert step["denied"] == "statement_timeout" and "0.15 s statement timeout" in step["reason"]
    cited = next(c for c in out["citations"] if c["kind"] == "query")
    assert cited["refused"] == "statement_timeout" and cited["query"] == slow
    failed = [x for x in _audit(a) if x.outcome == "failure" and x.details.get("sql") == slow]
    assert failed and failed[-1].details["reason"] == "statement_timeout"
    assert "statement timeout" in failed[-1].details["message"]

