"""A shared test helper module (not a test module: pytest collects only `test_*.py`): the ingestion
sensors and jobs as the daemon runs them, in process: one sensor tick (`build_sensor_context`), its
dynamic partitions added, each run request executed with its tags."""

from __future__ import annotations

import dagster as dg


class Pipeline:
    def __init__(self, instance: dg.DagsterInstance | None = None) -> None:
        import definitions

        self.defs = definitions.defs
        self.db = self.defs.resources["db"]
        self.instance = instance or dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.inbox_cursor: str | None = None

    @property
    def resources(self) -> dict:
        return {"db": self.db}

    def tick(self) -> dg.SensorResult | dg.SkipReason:
        from sensors.ingestion import document_intake

        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources)
        res = document_intake(ctx)
        if isinstance(res, dg.SensorResult):
            self.cursor = res.cursor
            for req in res.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
        return res

    def execute(self, rr: dg.RunRequest, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("ingest_documents")
        return job.execute_in_process(instance=self.instance, tags=rr.tags, partition_key=rr.partition_key,
                                      resources=self.resources, raise_on_error=raise_on_error)

    def run(self) -> list[dg.ExecuteInProcessResult]:
        """One tick, then every run it requested."""
        res = self.tick()
        if isinstance(res, dg.SkipReason):
            return []
        return [self.execute(rr) for rr in res.run_requests]

    def inbox(self) -> str:
        from sensors.ingestion import inbox

        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.inbox_cursor, resources=self.resources)
        msg = inbox(ctx).skip_message or ""
        self.inbox_cursor = ctx.cursor
        return msg
