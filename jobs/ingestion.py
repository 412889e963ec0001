"""Ingestion jobs: the batched pipeline run (launched by the document_intake sensor) and a data
steward's review of one Class III/IV document."""

import dagster as dg

from assets.ingestion import GROUP, INDEX, documents_partitions
from assets.steward import steward_review_pending

ingest_job = dg.define_asset_job(
    "ingest_documents",
    # The per-partition steward check runs per document (sensor steward_review_watch, job steward_review),
    # not over a batch's range: a range run records one result for all of its partitions.
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.checks(steward_review_pending),
    partitions_def=documents_partitions,
    # One process per run, not one per step: with the multiprocess executor every step of every run started
    # Python, imported torch and loaded the embedding model again, and that start-up (not the embedding)
    # was most of a run's time. The steps of one batch are sequential anyway (each needs the previous
    # stage of the same documents); the run coordinator's max_concurrent_runs gives the parallelism.
    executor_def=dg.in_process_executor,
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
    selection=dg.AssetSelection.assets(INDEX),
    partitions_def=documents_partitions,
    description="Data steward decision on a Class III/IV document: get an approval token from the platform API "
    "(POST /v1/documents/{id}/review-token), pick the document's partition and set ops.search_index.config = "
    "{decision: approve|reject, reason: <the same reason>, approval_token: <token>} (plus classification: I|II|III "
    "when the token lowers a detector's raise). The review queue is asset review_queue.",
)


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[ingest_job, steward_review_job])
