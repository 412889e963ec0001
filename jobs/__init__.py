"""Dagster jobs and schedules, one module per domain (the assets they select are in the assets/ module
of the same name). `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from jobs import compliance, evals, indexing, ingestion, memory, mes, operations, sap, steward


def defs() -> dg.Definitions:
    return dg.Definitions.merge(*(m.defs() for m in (ingestion, indexing, evals, memory, mes, steward, operations, sap,
                                                     compliance)))
