"""Run sizing of the intake sensor (sensors/ingestion.py `_batch_size`): a backlog of up to the base size is one
run, so the first documents are indexed soon; a larger one is cut into a multiple of BACKLOG_RUNS runs of equal
size (the run slots end together: no run is left alone at the end), as few as the ceiling allows, so a thousand
documents do not pay twenty process starts."""

from __future__ import annotations

import math

import pytest

from sensors.ingestion import BACKLOG_RUNS, _batch_size


def _runs(backlog: int, size: int) -> list[int]:
    return [min(size, backlog - i) for i in range(0, backlog, size)]


@pytest.mark.parametrize("backlog", [1, 7, 50])
def test_a_small_backlog_is_one_run(backlog):
    assert _runs(backlog, _batch_size(backlog, 50, 250)) == [backlog]


@pytest.mark.parametrize("backlog", [51, 60, 99, 101, 210, 400, 790, 1000, 1169, 5001])
@pytest.mark.parametrize("largest", [250, 400])
def test_a_larger_backlog_is_cut_into_run_pairs_of_equal_size(backlog, largest):
    runs = _runs(backlog, _batch_size(backlog, 50, largest))
    assert len(runs) % BACKLOG_RUNS == 0, runs
    assert max(runs) - min(runs) <= len(runs), runs  # equal up to the rounding
    assert max(runs) <= largest
    # as few runs as the ceiling allows, rounded up to a whole number of pairs
    assert len(runs) == math.ceil(math.ceil(backlog / largest) / BACKLOG_RUNS) * BACKLOG_RUNS


def test_the_backlog_that_left_a_run_alone_is_now_two_equal_runs():
    # Measured (benchmarks/ingest.py, 1,000 documents): 790 waiting documents were cut 250 + 250 + 250 + 40, and the
    # third run spent its last 90 s alone on the machine.
    assert _runs(790, _batch_size(790, 50, 400)) == [395, 395]
    assert _runs(790, _batch_size(790, 50, 250)) == [198, 198, 198, 196]


def test_the_ceiling_holds_for_a_huge_backlog():
    assert _batch_size(100_000, 50, 250) == 250


def test_a_ceiling_below_the_base_does_not_shrink_runs():
    # ingest_batch_max set lower than ingest_batch_size: the base size wins (runs never get smaller).
    assert _batch_size(1000, 50, 10) == 50
