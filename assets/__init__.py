"""Dagster assets: thin wrappers over core/compliance/agents. `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import ASSETS, CHECKS
from assets.resources import PlatformDatabase


def defs() -> dg.Definitions:
    return dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources={"db": PlatformDatabase()})
