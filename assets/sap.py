"""Operational data: per-tenant SAP extracts (inventory, open purchase orders, materials, cost centres),
materialised on a schedule (jobs/sap.py) for every tenant with an SAP connection, stored under the tenant's
row-level security (monitoring/sap_extracts.py).

Quality and freshness, both visible in the Dagster UI:
- the asset check `expectations`: a great-expectations suite per extract over every tenant's newest data —
  keys unique, quantities and amounts non-negative, units (and currencies) from the allowed set, at least
  one row, and the data no older than EAP_SAP_FRESHNESS_MINUTES. It runs after each materialisation.
- a time-window `FreshnessPolicy` on each asset (warn after EAP_SAP_FRESHNESS_MINUTES, fail after twice
  that), evaluated by the Dagster daemon even when no run happens: a stopped schedule or an SAP that keeps
  failing turns the asset's freshness red.
"""


import datetime as dt
import uuid
from typing import Any

import dagster as dg

from assets.resources import PlatformDatabase
from connectors.sap.client import SAPError
from monitoring import sap_extracts
from monitoring.sap_extracts import ALLOWED_CURRENCIES, ALLOWED_UNITS, EXTRACTS

OPERATIONAL = "operational"
DESCRIPTIONS = {
    "inventory": "SAP stock per material, plant, storage location, batch and stock type (API_MATERIAL_STOCK_SRV), "
                 "one snapshot per run: the history behind stock trends and the inventory_below_min rules.",
    "open_purchase_orders": "Open SAP purchase order items (not completely delivered) with supplier, open "
                            "quantity, price and delivery date (API_PURCHASEORDER_PROCESS_SRV).",
    "materials": "SAP material master per plant: description, type, group, base unit, reorder point, safety "
                 "stock (API_PRODUCT_SRV).",
    "cost_centers": "SAP cost centres with planned and actual costs (API_COSTCENTER_SRV).",
}
# (unique key columns, non-negative columns, unit column, currency column) per extract
SUITES: dict[str, tuple[list[str], list[str], str | None, str | None]] = {
    "inventory": (["material", "plant", "storage_location", "batch", "stock_type"], ["quantity"], "unit", None),
    "open_purchase_orders": (["purchase_order", "item"], ["quantity", "received", "open_quantity", "net_price"],
                             "unit", "currency"),
    "materials": (["material", "plant"], ["reorder_point", "safety_stock"], "base_unit", None),
    "cost_centers": (["controlling_area", "cost_center"], ["planned_costs", "actual_costs"], None, "currency"),
}


def asset_key(extract: str) -> dg.AssetKey:
    return dg.AssetKey(f"sap_{extract}")


def _extract_asset(extract: str, freshness_minutes: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"sap_{extract}", group_name=OPERATIONAL, description=DESCRIPTIONS[extract],
              kinds={"sap", "postgres"},
              # Evaluated by the Dagster daemon without a run: a stopped schedule or a failing SAP shows.
              freshness_policy=dg.FreshnessPolicy.time_window(
                  warn_window=dt.timedelta(minutes=freshness_minutes),
                  fail_window=dt.timedelta(minutes=2 * freshness_minutes)))
    def _asset(context: dg.AssetExecutionContext, db: PlatformDatabase) -> dg.MaterializeResult:
        per_tenant: dict[str, Any] = {}
        failures: dict[str, str] = {}
        tenants = sap_extracts.tenants_with_sap()
        for tenant_id, name, cfg in tenants:
            try:
                res = sap_extracts.EXTRACTORS[extract](tenant_id, sap_extracts.client_for(cfg))
            except SAPError as exc:
                failures[name] = f"{exc.code}: {exc.message}"
                context.log.warning(f"SAP {extract} extract failed for tenant {name}: {exc.message}")
                continue
            per_tenant[name] = {"rows": res.rows, "pages": res.pages, "as_of": res.as_of.isoformat(),
                                "duration_ms": round(res.duration_ms, 1), "source": res.source}
            context.log.info(f"SAP {extract} for {name}: {res.rows} rows in {res.pages} pages "
                             f"({res.duration_ms:.0f} ms)")
        metadata: dict[str, Any] = {
            "tenants": len(tenants), "extracted": len(per_tenant),
            "rows": sum(v["rows"] for v in per_tenant.values()),
            "per_tenant": dg.MetadataValue.json(per_tenant),
        }
        if failures:
            # The tenants that succeeded are stored; the run fails so the asset and its freshness turn red.
            raise dg.Failure(description=f"SAP {extract} extract failed for {len(failures)} of {len(tenants)} "
                                         f"tenants: " + "; ".join(f"{k}: {v}" for k, v in failures.items()),
                             metadata={**metadata, "failures": dg.MetadataValue.json(failures)})
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def validate_extract(extract: str, rows: list[dict[str, Any]], freshness_minutes: int,
                     now: dt.datetime | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Run the extract's great-expectations suite over its rows → (success, one result per expectation)."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    keys, non_negative, unit, currency = SUITES[extract]
    now = now or dt.datetime.now(dt.UTC)
    frame = pd.DataFrame(rows, columns=sorted({*keys, *non_negative, "extracted_at",
                                               *([unit] if unit else []), *([currency] if currency else [])}))
    for col in non_negative:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["age_minutes"] = [(now - t).total_seconds() / 60 for t in frame["extracted_at"]]
    # An in-memory context: no project folder, no analytics, nothing downloaded.
    ctx = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False)))
    batch_def = ctx.data_sources.add_pandas(f"sap_{uuid.uuid4().hex[:8]}").add_dataframe_asset(extract) \
        .add_batch_definition_whole_dataframe("newest")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"sap_{extract}"))
    e = gx.expectations
    suite.add_expectation(e.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(e.ExpectCompoundColumnsToBeUnique(column_list=keys))
    for col in keys:
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=col))
    for col in non_negative:
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=col))
        suite.add_expectation(e.ExpectColumnValuesToBeBetween(column=col, min_value=0))
    if unit:
        suite.add_expectation(e.ExpectColumnValuesToBeInSet(column=unit, value_set=sorted(ALLOWED_UNITS)))
    if currency:
        suite.add_expectation(e.ExpectColumnValuesToBeInSet(column=currency, value_set=sorted(ALLOWED_CURRENCIES)))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="age_minutes", min_value=-5,
                                                          max_value=freshness_minutes))
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    out = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = cfg.kwargs if cfg is not None else {}
        out.append({"expectation": cfg.type if cfg is not None else "?",
                    "column": kwargs.get("column") or kwargs.get("column_list"),
                    "success": bool(r.success), "unexpected_count": r.result.get("unexpected_count"),
                    "observed": str(r.result.get("observed_value"))[:80] if "observed_value" in r.result else None,
                    "examples": [str(x)[:80] for x in (r.result.get("partial_unexpected_list") or [])[:3]]})
    return bool(result.success), out


def _expectations_check(extract: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset_key(extract), name="expectations",
                    description=f"great-expectations suite of the {extract} extract: keys unique, quantities "
                                "non-negative, units/currencies allowed, not empty, fresh — per tenant.")
    def _check(context: dg.AssetCheckExecutionContext, db: PlatformDatabase) -> dg.AssetCheckResult:
        from core.settings import get_settings

        minutes = get_settings().sap_freshness_minutes
        per_tenant: dict[str, Any] = {}
        failed: list[str] = []
        for tenant_id, name, _cfg in sap_extracts.tenants_with_sap():
            ok, results = validate_extract(extract, sap_extracts.latest_rows(tenant_id, extract), minutes)
            per_tenant[name] = {"success": ok, "failed": [r for r in results if not r["success"]]}
            if not ok:
                failed.append(name)
        return dg.AssetCheckResult(
            passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
            description="all expectations met" if not failed else f"expectations failed for {', '.join(failed)}",
            metadata={"tenants": len(per_tenant), "failed_tenants": dg.MetadataValue.json(failed),
                      "results": dg.MetadataValue.json(per_tenant), "freshness_minutes": minutes})

    return _check


SAP_CHECKS = [_expectations_check(e) for e in EXTRACTS]


def defs() -> dg.Definitions:
    from core.settings import get_settings

    minutes = get_settings().sap_freshness_minutes
    return dg.Definitions(assets=[_extract_asset(e, minutes) for e in EXTRACTS], asset_checks=SAP_CHECKS)
