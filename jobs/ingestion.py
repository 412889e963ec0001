"""Ingestion jobs: the batched pipeline run (launched by the document_intake sensor) and a data
steward's review of one Class III/IV document."""

import dagster as dg

from assets.ingestion import GROUP, documents_partitions, search_index

ingest_job = dg.define_asset_job(
    "ingest_documents",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=documents_partitions,
    description="Parse, classify, sanitise, chunk, embed and index a batch of documents (launched by "
    "the document_intake sensor).",
)

# Dagster's webserver has no login: the decision is authorised by the platform API (an approval token
# for one document version, issued to an authenticated data steward who did not upload it) and the run
# verifies and consumes that token; a launch without one fails and changes nothing. The config is
# typed on the asset (assets.ingestion.IndexConfig: decision is an enum); Dagster does not allow a
# config mapping (which could make the three fields required here) on a partitioned job.
steward_review_job = dg.define_asset_job(
    "steward_review",
    selection=dg.AssetSelection.assets(search_index),
    partitions_def=documents_partitions,
    description="Data steward decision on a Class III/IV document: get an approval token from the platform API "
    "(POST /v1/documents/{id}/review-token), pick the document's partition and set ops.search_index.config = "
    "{decision: approve|reject, reason: <the same reason>, approval_token: <token>}.",
)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[ingest_job, steward_review_job])
