"""A running run's rate and ETA as the cache's readers tell them (analysis/runs/pace.py), and the
target they count to: what the request asked for (RunInfo.samples_requested)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from layerscope.analysis.base.records import RunInfo
from layerscope.analysis.runs.pace import Pace, PaceTracker, pace_between, session_pace

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run_info(done: int, *, total: int = 40, status: str = "running", **provenance) -> RunInfo:
    return RunInfo(
        id="ab" * 8,
        model="m",
        dataset="d",
        response_type="none_cot",
        mode="base",
        status=status,
        samples_total=total,
        samples_done=done,
        samples_skipped=0,
        samples_failed=0,
        layers=2,
        projections=("q",),
        settings={},
        provenance=provenance,
        started_at=None,
        finished_at=None,
    )


def test_the_target_is_what_was_requested_else_the_file():
    assert run_info(3, requested=16).samples_requested == 16
    assert run_info(3).samples_requested == 40  # older runs recorded no request
    assert run_info(3, requested="16").samples_requested == 40
    # an earlier request asked for more than the last one: never fewer than it holds
    assert run_info(20, requested=16).samples_requested == 20
    # a shard counts to its share; merged (no shard any more), to the whole request
    assert run_info(2, requested=5, shard="1/2", shard_requested=2).samples_requested == 2
    assert run_info(2, requested=5, shard_requested=2).samples_requested == 5


def test_pace_between_two_counts():
    assert pace_between(4, at(0), 12, at(4), 16) == Pace(2.0, 2.0)
    assert pace_between(4, at(0), 16, at(4), 16) == Pace(3.0, None)  # nothing left
    assert pace_between(4, at(0), 4, at(4), 16) is None  # did not grow
    assert pace_between(4, at(0), 8, at(0), 16) is None  # no time between


def test_the_session_gives_a_pace_when_it_recorded_its_start():
    run = run_info(12, requested=16, started_at="2025-01-01T12:00:00Z", handled_at_start=4)
    assert session_pace(run, at(8)) == Pace(1.0, 4.0)
    assert session_pace(run_info(12, requested=16), at(8)) is None  # an older run


def test_the_tracker_follows_successive_reads():
    tracker = PaceTracker(window_seconds=60)
    assert tracker.observe([run_info(4, requested=16)], at(0)) == {}  # one read tells nothing
    paces = tracker.observe([run_info(8, requested=16)], at(2))
    assert paces["ab" * 8] == Pace(2.0, 4.0)
    paces = tracker.observe([run_info(8, requested=16)], at(4))  # over both reads since
    assert paces["ab" * 8].rate == pytest.approx(1.0)
    assert paces["ab" * 8].eta_seconds == pytest.approx(8.0)


def test_old_reads_leave_the_window_and_finished_runs_are_forgotten():
    tracker = PaceTracker(window_seconds=10)
    tracker.observe([run_info(0, requested=100)], at(0))
    tracker.observe([run_info(50, requested=100)], at(5))  # fast at first
    paces = tracker.observe([run_info(60, requested=100)], at(15))  # the first read is out
    assert paces["ab" * 8].rate == pytest.approx(1.0)
    assert tracker.observe([run_info(100, requested=100, status="complete")], at(20)) == {}
    assert tracker.observe([run_info(100, requested=100)], at(21)) == {}  # begun afresh


def test_a_run_with_fewer_samples_than_before_starts_over():
    tracker = PaceTracker()
    tracker.observe([run_info(10)], at(0))
    assert tracker.observe([run_info(2)], at(1)) == {}
    assert tracker.observe([run_info(4)], at(2))["ab" * 8] == Pace(2.0, 18.0)


def test_without_a_second_different_read_the_session_decides():
    run = run_info(6, requested=16, started_at="2025-01-01T12:00:00Z", handled_at_start=0)
    tracker = PaceTracker()
    assert tracker.observe([run], at(3)) == {run.id: Pace(2.0, 5.0)}
    assert tracker.observe([replace(run)], at(6))[run.id] == Pace(1.0, 10.0)


def test_each_session_records_what_the_run_held_when_it_began(tmp_path):
    from cache_helpers import batch, ended, make_result, make_samples, small_header

    from layerscope.analysis.cache import ResultsCache

    cache = ResultsCache(tmp_path / "c.duckdb")
    header = small_header("paced")
    assert cache.begin_run(header).provenance["handled_at_start"] == 0
    cache.write_batch(header.run_id, batch([make_result(0, 2), make_result(1, 2)]), make_samples(3))
    cache.finish_run(header.run_id, "cancelled")
    ended(tmp_path / "c.duckdb", header.run_id)
    resumed = cache.begin_run(header)
    assert resumed.provenance["handled_at_start"] == 2
    assert [s["handled_at_start"] for s in resumed.provenance["sessions"]] == [0, 2]
