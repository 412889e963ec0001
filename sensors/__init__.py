"""Dagster sensors (inbox folders, MES polling). `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[])
