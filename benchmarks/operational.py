"""Operational data overheads: SAP reads through the client vs a raw HTTP GET of the same URL, and the SQL
Guard per query.

    python benchmarks/operational.py [--reads 200] [--queries 200]

SAP: the SAP simulator on loopback (the network is not what is measured); the client's read of one
material's stock (pyodata request building, Basic auth, paging check, pydantic validation of every
record) against `requests.get` of the identical URL and query string with the same session features
(Basic auth, keep-alive). The first read through the client (the $metadata fetch and parse) is reported
on its own. SQL Guard: `check()` alone (parse with sqlglot, allow-lists, LIMIT), then `run()` (check +
READ ONLY transaction + statement timeout + audit record) against the same checked SQL executed raw in a
READ ONLY transaction as the application role, on the embedded PostgreSQL. Prints p50/p95 and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SQL = "SELECT line, state, count(*) AS machines FROM machine_status GROUP BY line, state ORDER BY line LIMIT 50"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(name: str, xs: list[float]) -> str:
    return f"  {name:<44} p50 {pct(xs, 50):8.2f} ms   p95 {pct(xs, 95):8.2f} ms   mean {statistics.fmean(xs):8.2f} ms"


def sap(reads: int) -> None:
    import requests

    from connectors.sap.client import SAPClient, SAPConfig
    from connectors.sap.models import MaterialStock
    from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator

    sim = SAPSimulator(seed=7).start()
    try:
        client = SAPClient(SAPConfig(sim.url, DEFAULT_USER, DEFAULT_PASSWORD, timeout_s=10, retries=0))
        t = time.perf_counter()
        client.material_stock(material="SP-4001")
        first = (time.perf_counter() - t) * 1000
        via_client = timed(lambda: client.material_stock(material="SP-4001"), reads)
        raw = requests.Session()
        raw.auth = (DEFAULT_USER, DEFAULT_PASSWORD)
        url = client.service_url("API_MATERIAL_STOCK_SRV") + "A_MatlStkInAcctMod"
        params = {"$select": ",".join(MaterialStock.sap_fields()), "$inlinecount": "allpages",
                  "$filter": "Material eq 'SP-4001'"}

        def raw_get() -> None:
            r = raw.get(url, params=params, headers={"Accept": "application/json"}, timeout=10)
            r.raise_for_status()
            r.json()

        via_raw = timed(raw_get, reads)
        many = timed(lambda: client.material_stock(), max(5, reads // 20))  # every page of the whole stock
        print(f"SAP reads ({reads} each; simulator on loopback, {sim.state.page_size} records per page)")
        print(f"  first read through the client ($metadata fetched and parsed): {first:.1f} ms")
        print(line("client: one material's stock", via_client))
        print(line("raw GET of the same URL (requests, json())", via_raw))
        print(line(f"client: all stock ({len(client.material_stock().records)} records, pages)", many))
        print(f"  client / raw (p50): {pct(via_client, 50) / pct(via_raw, 50):.2f}x")
    finally:
        sim.stop()


def guard(queries: int) -> None:
    os.environ.update({"EAP_HOME": tempfile.mkdtemp(prefix="eap-opbench-"), "EAP_LOG_JSON": "false"})
    import sqlalchemy as sa

    from compliance import sqlguard
    from core.db.database import app_engine, bootstrap, stop_embedded
    from identity.tenancy import create_tenant

    bootstrap()
    try:
        tenant, _ = create_tenant("opbench")
        engine = app_engine()
        checked = sqlguard.check(SQL, "operator")
        only_check = timed(lambda: sqlguard.check(SQL, "operator"), queries)

        def raw() -> None:
            with engine.connect() as conn, conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.execute(sa.text("SELECT set_config('eap.tenant_id', :t, true)"), {"t": str(tenant.id)})
                conn.exec_driver_sql(checked.sql).fetchall()

        raw_ms = timed(raw, queries)
        guarded = timed(lambda: sqlguard.run(engine, tenant.id, actor="bench", role="operator", sql=SQL,
                                             purpose="benchmark"), queries)
        print(f"SQL Guard ({queries} queries of: {SQL})")
        print(line("check() alone (parse + allow-lists)", only_check))
        print(line("raw READ ONLY execution of the checked SQL", raw_ms))
        print(line("run(): check + READ ONLY + timeout + audit", guarded))
        print(f"  guard overhead per query (p50): {pct(guarded, 50) - pct(raw_ms, 50):.2f} ms "
              f"({pct(guarded, 50) / pct(raw_ms, 50):.2f}x the raw query)")
    finally:
        stop_embedded()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-guard", action="store_true", help="SAP only (no database)")
    args = ap.parse_args()
    sap(args.reads)
    if not args.skip_guard:
        guard(args.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
