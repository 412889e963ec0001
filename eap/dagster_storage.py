"""Dagster's instance storage on PostgreSQL, with pooled connections (dagster.yaml names these classes).

dagster-postgres opens a new PostgreSQL connection for every statement it runs (a NullPool, chosen upstream so
that many short-lived DagsterInstance objects cannot pile up idle connections). Here each Dagster process holds
one long-lived instance, and ingestion writes many small events, so connecting was most of the work:
- creating one ingest run logs a "materialization planned" event per asset and document (7 per document), each
  stored with two or three fresh connections: py-spy over the daemon while it created runs for 1,000 uploads
  showed it busy creating runs nearly the whole time, with connection set-up a third of it (PostgreSQL forks a
  backend process for every connection, on the same 2 cores);
- a run worker's per-document metadata (`add_asset_metadata(partition_key=…)`) looks the run's partitions up
  again on every call, three queries each on a fresh connection;
- the daemon's run queue, sensor and monitoring loops query every few seconds, each query a new connection.

These classes are dagster-postgres's own storages (same tables, migrations and SQL); only their engine is
swapped for a small pool: one idle connection kept per storage and process, up to POOL_OVERFLOW more while
threads write at once, each checked on checkout (a restarted server costs one failed ping, not a failed run).
The Dagster webserver still replaces the engine with its own pool (optimize_for_webserver).
"""

from collections.abc import Mapping
from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_SIZE = 1  # idle connections kept per storage and process (3 storages per Dagster process)
POOL_OVERFLOW = 8  # extra connections while several threads write at once, closed when returned
POOL_RECYCLE_S = 1800  # a connection is replaced after this long (server-side idle limits, proxies)


def _pooled(storage: Any) -> None:
    old = storage._engine
    storage._engine = create_pg_engine(
        storage.postgres_url, storage._token_provider, isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_recycle=POOL_RECYCLE_S, pool_pre_ping=True)
    old.dispose()


def _kwargs(inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {"inst_data": inst_data, "postgres_url": pg_url_from_config(config_value),
            "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
            "token_provider": get_token_provider_from_config(config_value)}


class _Pooled:
    """Mixed in before a dagster-postgres storage class: its engine pooled, built from the same config."""

    _engine: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled(self)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> Any:
        return cls(**_kwargs(inst_data, config_value))

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]  # the storage class after this one in the MRO has it
        self._engine.dispose()


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass
