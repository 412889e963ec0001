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


def _pending(n: int, size_bytes: int) -> list:
    import datetime as dt
    import uuid

    from ingestion.recovery import Pending

    now = dt.datetime.now(dt.UTC)
    return [Pending(id=str(uuid.uuid4()), tenant_id=uuid.uuid4(), content_hash="h", status="queued",
                    size_bytes=size_bytes, format="html", run_id=None, heartbeat_at=None, updated_at=now,
                    queued_at=now, attempts=0) for _ in range(n)]


@pytest.mark.parametrize("backlog", [60, 400, 791, 1169])
def test_the_byte_ceiling_adds_whole_pairs_of_equal_runs(backlog):
    # Measured: 791 manual pages of ~13 kB (5 MB per 400) were cut 365 + 396 + 30 when only the byte ceiling split
    # them; the 30-document run ran alone at the end.
    from sensors.ingestion import _split_by_size

    docs = _pending(backlog, 13_000)
    batches = _split_by_size(docs, _batch_size(backlog, 50, 400), 5 * 1024 * 1024, 5 * 1024 * 1024)
    sizes = [len(b) for b in batches]
    assert sum(sizes) == backlog and [d for b in batches for d in b] == docs  # contiguous, in order
    assert len(batches) % BACKLOG_RUNS == 0 and max(sizes) - min(sizes) <= len(batches), sizes
    assert all(sum(d.size_bytes for d in b) <= 5 * 1024 * 1024 for b in batches)


def test_large_documents_run_alone_after_the_small_ones():
    from sensors.ingestion import _split_by_size

    small, big = _pending(3, 100), _pending(1, 10_000)
    assert _split_by_size(small + big, 50, 4000, 16 * 1024 * 1024) == [small, big]
