"""Dagster assets and asset checks, one module per domain: thin wrappers over the domain packages.
Their jobs and schedules are in jobs/, their sensors in sensors/ (same module names). `defs()` is
merged in definitions.py and carries the resources."""

from __future__ import annotations

import dagster as dg

from assets import compliance, evals, indexing, ingestion, memory, sap, steward
from assets.resources import platform_resources


def defs() -> dg.Definitions:
    return dg.Definitions.merge(*(m.defs() for m in (ingestion, indexing, evals, memory, steward, sap, compliance)),
                                dg.Definitions(resources=platform_resources()))
