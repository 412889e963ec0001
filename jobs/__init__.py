"""Dagster jobs and schedules. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[], schedules=[])
