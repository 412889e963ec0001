"""Dagster jobs and schedules. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import GROUP, documents_partitions, search_index
from jobs.mes import mes_alert_job

ingest_job = dg.define_asset_job(
    "ingest_documents",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=documents_partitions,
    description="Parse, classify, sanitise, chunk, embed and index a batch of documents (launched by "
    "the document_intake sensor).",
)

steward_review_job = dg.define_asset_job(
    "steward_review",
    selection=dg.AssetSelection.assets(search_index),
    partitions_def=documents_partitions,
    description="Data steward decision on a Class III/IV document: pick the document's partition and set "
    "ops.search_index.config = {decision: approve|reject, steward: <name>, reason: <why>}.",
)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[ingest_job, steward_review_job, mes_alert_job])
