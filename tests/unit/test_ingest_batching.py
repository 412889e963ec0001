"""Run sizing of the intake sensor (sensors/ingestion.py `_batch_size`): a small backlog keeps the base size,
so the first documents are indexed soon; a large one is cut into about BACKLOG_RUNS runs, never larger than
the ceiling, so a thousand documents do not pay twenty process starts and model loads."""

from __future__ import annotations

import math

import pytest

from sensors.ingestion import BACKLOG_RUNS, _batch_size


@pytest.mark.parametrize("backlog", [1, 7, 50, BACKLOG_RUNS * 50 - 1, BACKLOG_RUNS * 50])
def test_a_small_backlog_keeps_the_base_size(backlog):
    assert _batch_size(backlog, 50, 250) == 50


@pytest.mark.parametrize("backlog", [400, 1000, 1169])
def test_a_large_backlog_runs_in_few_runs(backlog):
    size = _batch_size(backlog, 50, 250)
    assert 50 < size <= 250
    assert math.ceil(backlog / size) <= max(BACKLOG_RUNS, math.ceil(backlog / 250))
    assert math.ceil(backlog / size) < math.ceil(backlog / 50)


def test_a_backlog_over_the_base_size_per_run_slot_gets_larger_runs():
    assert _batch_size(BACKLOG_RUNS * 50 + 1, 50, 250) == 51


def test_the_ceiling_holds_for_a_huge_backlog():
    size = _batch_size(100_000, 50, 250)
    assert size == 250


def test_a_ceiling_below_the_base_does_not_shrink_runs():
    # ingest_batch_max set lower than ingest_batch_size: the base size wins (runs never get smaller).
    assert _batch_size(1000, 50, 10) == 50
