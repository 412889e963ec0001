"""Ingestion pipeline logic (submission, stages, index writes, invariants) that Dagster assets,
sensors, the API and the CLI share. Sits above compliance and core; never imports Dagster."""
