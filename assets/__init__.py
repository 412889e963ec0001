"""Dagster assets and asset checks, one module per domain: thin wrappers over the domain packages.
Their jobs and schedules are in jobs/, their sensors in sensors/ (same module names). `defs()` is
merged in definitions.py and carries the resources."""

from __future__ import annotations

import dagster as dg

from assets import evals, indexing, ingestion, memory
from assets.resources import PlatformDatabase


def defs() -> dg.Definitions:
    return dg.Definitions.merge(*(m.defs() for m in (ingestion, indexing, evals, memory)),
                                dg.Definitions(resources={"db": PlatformDatabase()}))
