"""Shared by the benchmarks: ingest files through the real sensor + Dagster job, in process."""

from __future__ import annotations

import uuid
from pathlib import Path


def ingest_in_process(tenant_id: uuid.UUID, files: list[Path], root: Path, classification: str = "II") -> int:
    """Submit `files` and run the ingest_documents job for them; returns the number of runs."""
    import dagster as dg

    import definitions
    from eap.ingest import submit_paths
    from sensors.ingestion import document_intake

    submit_paths(tenant_id, files, classification=classification, acl=None, actor="bench", root=root)
    resources = {"db": definitions.defs.resources["db"]}
    inst = dg.DagsterInstance.ephemeral()
    res = document_intake(dg.build_sensor_context(instance=inst, resources=resources))
    if isinstance(res, dg.SkipReason):
        return 0
    for req in res.dynamic_partitions_requests:
        inst.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
    job = definitions.defs.resolve_job_def("ingest_documents")
    for rr in res.run_requests:
        job.execute_in_process(instance=inst, tags=rr.tags, partition_key=rr.partition_key, resources=resources)
    return len(res.run_requests)
