"""SAP extracts as Dagster assets: the real job (four assets + their great-expectations checks) against two
SAP simulators for two tenants, stored under RLS; the checks fail visibly on bad data; a failing SAP fails
the run for its tenant only; the inventory_below_min rule is evaluated from the stock extract by the asset
sensor and raises an alert through the alert job."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import dagster as dg
import pytest
from sqlalchemy import text

from assets.sap import validate_extract
from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator
from core.db.database import tenant_session
from monitoring.sap_extracts import configure_sap


@pytest.fixture(scope="module")
def env(platform_db):
    import definitions

    mp = pytest.MonkeyPatch()
    mp.setenv("EAP_SAP_TEST_PASSWORD", DEFAULT_PASSWORD)
    sims = {"a": SAPSimulator(seed=7, page_size=60).start(), "b": SAPSimulator(seed=8, page_size=60).start()}
    yield {"sims": sims, "inst": dg.DagsterInstance.ephemeral(), "defs": definitions.defs}
    for s in sims.values():
        s.stop()
    mp.undo()


def _connect(t, sim, **extra) -> None:
    configure_sap(t.id, {"base_url": sim.url, "username": DEFAULT_USER, "password_env": "EAP_SAP_TEST_PASSWORD",
                         "timeout_s": 2, "retries": 0, **extra}, actor="test", actor_role="admin")


def _run(env, **kw) -> dg.ExecuteInProcessResult:
    job = env["defs"].resolve_job_def("sap_extracts")
    return job.execute_in_process(instance=env["inst"], resources={"db": env["defs"].resources["db"]},
                                  raise_on_error=False, **kw)


def _disconnect_all() -> None:
    from core.db.database import system_session

    with system_session() as s:  # other modules' tenants keep no SAP connection into this module's runs
        s.execute(text("UPDATE tenants SET settings = settings - 'sap' WHERE settings ? 'sap'"))


def test_extracts_per_tenant_under_rls_with_passing_expectations(env, make_tenant):
    _disconnect_all()
    a, b = make_tenant("sapa"), make_tenant("sapb")
    _connect(a, env["sims"]["a"])
    _connect(b, env["sims"]["b"])
    res = _run(env)
    assert res.success
    checks = {e.asset_key.to_user_string(): e for e in res.get_asset_check_evaluations()}
    assert set(checks) == {"sap_inventory", "sap_open_purchase_orders", "sap_materials", "sap_cost_centers"}
    assert all(e.passed for e in checks.values()), {k: e.metadata for k, e in checks.items() if not e.passed}
    for t, sim in ((a, env["sims"]["a"]), (b, env["sims"]["b"])):
        with tenant_session(t.id) as s:
            stored = s.execute(text("SELECT sum(quantity) FROM sap_stock WHERE material = 'SP-4001' "
                                    "AND stock_type = '01'")).scalar()
            assert stored == sim.stock_of("SP-4001")
            counts = s.execute(text("SELECT (SELECT count(*) FROM sap_stock), (SELECT count(*) FROM sap_materials), "
                                    "(SELECT count(*) FROM sap_cost_centers), (SELECT count(DISTINCT tenant_id) "
                                    "FROM sap_stock), (SELECT count(*) FROM sap_extracts)")).one()
        assert counts[0] == len(sim.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod"))
        assert counts[1] == len(sim.rows("API_PRODUCT_SRV", "A_ProductPlant"))
        assert counts[2] == len(sim.rows("API_COSTCENTER_SRV", "A_CostCenter"))
        assert counts[3] == 1 and counts[4] == 4  # RLS: only its own rows; one log row per extract
    assert env["sims"]["a"].stock_of("SP-4001") != env["sims"]["b"].stock_of("SP-4001")  # the test can tell them apart

    # A second run appends a stock snapshot (history) and replaces the current-state extracts.
    env["sims"]["a"].set_stock("SP-4001", "1010", "0004", 3)
    assert _run(env).success
    with tenant_session(a.id) as s:
        snaps = s.execute(text("SELECT extracted_at, sum(quantity) FROM sap_stock WHERE material = 'SP-4001' "
                               "AND plant = '1010' GROUP BY extracted_at ORDER BY extracted_at")).all()
        assert [q for _, q in snaps][-1] == Decimal(3) and len(snaps) == 2
        assert s.execute(text("SELECT count(*) FROM sap_materials")).scalar() == \
            len(env["sims"]["a"].rows("API_PRODUCT_SRV", "A_ProductPlant"))


def test_expectation_suite_fails_on_bad_rows_and_stale_data():
    now = dt.datetime.now(dt.UTC)
    good = [{"material": "M1", "plant": "1010", "storage_location": "0001", "batch": "", "stock_type": "01",
             "quantity": Decimal(5), "unit": "PC", "extracted_at": now}]
    ok, _ = validate_extract("inventory", good, 90, now=now)
    assert ok
    bad = good + [{**good[0], "quantity": Decimal(-2), "unit": "XX"}]  # duplicate key, negative, unknown unit
    ok, results = validate_extract("inventory", bad, 90, now=now)
    failed = {r["expectation"] for r in results if not r["success"]}
    assert not ok and failed == {"expect_compound_columns_to_be_unique", "expect_column_values_to_be_between",
                                 "expect_column_values_to_be_in_set"}
    ok, results = validate_extract("inventory", good, 90, now=now + dt.timedelta(hours=3))
    assert not ok and [r["column"] for r in results if not r["success"]] == ["age_minutes"]
    ok, _ = validate_extract("cost_centers", [], 90, now=now)
    assert not ok  # an empty extract is not a healthy one


def test_check_fails_visibly_in_dagster_and_a_failing_sap_fails_only_its_tenant(env, make_tenant):
    _disconnect_all()
    a, b = make_tenant("sapc"), make_tenant("sapd")
    _connect(a, env["sims"]["a"])
    _connect(b, env["sims"]["b"])
    assert _run(env).success
    with tenant_session(a.id) as s:  # a corrupted stored extract: the check reports the tenant
        s.execute(text("UPDATE sap_stock SET unit = 'XX' WHERE material = 'RM-1001'"))
    from assets import sap as sap_assets

    key = dg.AssetCheckKey(dg.AssetKey("sap_inventory"), "expectations")  # the check alone, as the UI runs it
    only = dg.Definitions.merge(sap_assets.defs(), dg.Definitions(
        jobs=[dg.define_asset_job("inventory_check", selection=dg.AssetSelection.checks(key))],
        resources={"db": env["defs"].resources["db"]}))
    res = only.resolve_job_def("inventory_check").execute_in_process(instance=env["inst"], raise_on_error=False)
    (ev,) = res.get_asset_check_evaluations()
    assert not ev.passed and ev.metadata["failed_tenants"].value == [a.name]

    env["sims"]["b"].fail_next(50, 503)
    before = env["sims"]["a"].state.requests
    res = _run(env, asset_selection=[dg.AssetKey("sap_cost_centers")])
    env["sims"]["b"].state.fail.clear()
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert b.name in message and a.name not in message
    assert env["sims"]["a"].state.requests > before  # tenant A was still extracted
    with tenant_session(a.id) as s:
        assert s.execute(text("SELECT count(*) FROM sap_extracts WHERE extract = 'cost_centers'")).scalar() == 2


def test_inventory_below_min_rule_alerts_from_the_stock_extract(env, make_tenant, client):
    from core.models import Role
    from core.security import mint_token
    from core.settings import get_settings
    from sensors.sap import sap_inventory_alerts

    _disconnect_all()
    t = make_tenant("sapinv")
    _connect(t, env["sims"]["a"])
    h = {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=Role.admin,
                                                   subject="admin")}
    r = client.put("/v1/alert-rules", json={"rules": [
        {"name": "filters low", "kind": "inventory_below_min", "threshold": 10, "scope": "SP-4001@1010",
         "severity": "warning", "channels": {}}]}, headers=h)
    assert r.status_code == 200, r.text
    env["sims"]["a"].set_stock("SP-4001", "1010", "0004", 4)
    assert _run(env, asset_selection=[dg.AssetKey("sap_inventory")]).success
    tick = sap_inventory_alerts.evaluate_tick(dg.build_sensor_context(instance=env["inst"], definitions=env["defs"]))
    (rr,) = tick.run_requests
    job = env["defs"].resolve_job_def("mes_alert_job")
    assert job.execute_in_process(run_config=rr.run_config, instance=env["inst"],
                                  resources={"db": env["defs"].resources["db"]}).success
    with tenant_session(t.id) as s:
        alert = s.execute(text("SELECT subject, value, message, root_cause FROM alerts")).one()
    assert alert.subject == "SP-4001@1010" and alert.value == 4 and "below the minimum of 10" in alert.message
    assert "Root-cause draft" in alert.root_cause and "agent runtime" in alert.root_cause

    # Restocked: the next extract clears the condition and resolves the alert.
    env["sims"]["a"].set_stock("SP-4001", "1010", "0004", 25)
    assert _run(env, asset_selection=[dg.AssetKey("sap_inventory")]).success
    tick = sap_inventory_alerts.evaluate_tick(dg.build_sensor_context(instance=env["inst"], definitions=env["defs"]))
    assert not tick.run_requests and "no new breaches" in (tick.skip_message or "")
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT status FROM alerts")).scalar() == "resolved"
