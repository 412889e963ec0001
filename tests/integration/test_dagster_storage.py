"""The Dagster instance storage the product configures (dagster.yaml → eap/dagster_storage.py): dagster-postgres's
storages with pooled connections. Counted at the driver: how many PostgreSQL connections a stream of events and
lookups opens, with the product's storage and with dagster-postgres's stock one; and a server that drops every
connection (a restart, an administrator) is survived."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

REPO = Path(__file__).resolve().parents[2]
EVENTS = 60


@pytest.fixture
def instance(platform_db, tmp_path, monkeypatch):
    monkeypatch.setenv("EAP_DAGSTER_PG_URL", platform_db.dagster)
    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    inst = dg.DagsterInstance.from_config(str(tmp_path))
    yield inst
    inst.dispose()


def _count_connects(engine: sa.engine.Engine) -> list[int]:
    opened = [0]

    @event.listens_for(engine, "connect")
    def _opened(*_: object) -> None:
        opened[0] += 1

    return opened


def _workload(inst: dg.DagsterInstance, tag: str) -> None:
    """What ingestion does many times per document: store asset events, look partitions and runs up."""
    keys = [f"{tag}-{i}" for i in range(EVENTS)]
    inst.add_dynamic_partitions(f"probe_{tag}", keys)
    for k in keys:
        inst.report_runless_asset_event(dg.AssetMaterialization(f"probe_{tag}", partition=k))
        assert inst.has_dynamic_partition(f"probe_{tag}", k)
    assert len(inst.get_run_records(dg.RunsFilter(tags={"probe": tag}))) == 0


def test_the_product_storage_reuses_its_connections_where_stock_dagster_postgres_opens_one_per_statement(
        instance, platform_db):
    from dagster_postgres.event_log import PostgresEventLogStorage

    from eap.dagster_storage import (
        PooledPostgresEventLogStorage,
        PooledPostgresRunStorage,
        PooledPostgresScheduleStorage,
    )

    assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
    assert isinstance(instance.run_storage, PooledPostgresRunStorage)
    assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)
    events = _count_connects(instance.event_log_storage._engine)
    runs = _count_connects(instance.run_storage._engine)
    _workload(instance, "pooled")
    assert events[0] <= 2 and runs[0] <= 2, (events, runs)
    mats = instance.fetch_materializations(dg.AssetKey("probe_pooled"), limit=EVENTS + 1).records
    assert len(mats) == EVENTS

    # The same work on dagster-postgres's own event log storage: a connection per statement.
    stock = PostgresEventLogStorage(platform_db.dagster)
    opened = _count_connects(stock._engine)
    keys = [f"stock-{i}" for i in range(EVENTS)]
    stock.add_dynamic_partitions("probe_stock", keys)
    for k in keys:
        assert stock.has_dynamic_partition("probe_stock", k)
    assert opened[0] >= EVENTS


def test_pooled_connections_dropped_by_the_server_are_replaced(instance, platform_db):
    from sqlalchemy.engine import make_url

    _workload(instance, "before")  # the pools now hold open connections
    db = make_url(platform_db.dagster).database
    admin = sa.create_engine(platform_db.admin, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        killed = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": db}).scalar()
    admin.dispose()
    assert killed >= 1
    _workload(instance, "after")  # every storage call still works: a dead pooled connection is replaced
    assert len(instance.fetch_materializations(dg.AssetKey("probe_after"), limit=EVENTS + 1).records) == EVENTS
