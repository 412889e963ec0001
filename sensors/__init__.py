"""Dagster sensors (inbox folders, document intake, MES polling). `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from sensors.ingestion import document_intake, inbox


def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[document_intake, inbox])
