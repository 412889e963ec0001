"""Composition root of the Dagster code location (workspace.yaml points here)."""

import dagster as dg

import assets
import jobs
import sensors

defs = dg.Definitions.merge(assets.defs(), jobs.defs(), sensors.defs())
