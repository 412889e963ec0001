"""Dagster sensors, one module per domain (the jobs they launch are in the jobs/ module of the same
name). `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from sensors import compliance, indexing, ingestion, mes, operations, sap, steward


def defs() -> dg.Definitions:
    return dg.Definitions.merge(*(m.defs() for m in (ingestion, indexing, mes, steward, operations, sap, compliance)))
