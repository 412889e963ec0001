"""Dagster sensors (inbox folders, document intake, MES polling). `defs()` is merged in definitions.py."""

from __future__ import annotations

import dagster as dg

from sensors.ingestion import document_intake, inbox
from sensors.mes import mes_sensors


def defs() -> dg.Definitions:
    from core.settings import get_settings

    s = get_settings()
    return dg.Definitions(sensors=[document_intake, inbox, *mes_sensors(s.mes_status_interval_s,
                                                                         s.mes_quality_interval_s)])
