"""The explorer says whether overlaid runs differ: the comparison table's "sig." column and
verdict, and a star under each layer that differs on the chart, legible without colour.

The tests take longer than the curves on a big cache, so the curves come first and the marks
follow ("testing…" meanwhile); each pair is tested once for what its runs stored, so a redraw
(another statistic and back, log scale, interval, x axis) never tests again. Here the tests are
held on a gate the test opens, and counted: in a thread pool the App is given in place of
the tests' own process (the same code path but for the process boundary). The tests that cross
it run the real spawned process: its tests held on a multiprocessing gate, failing, or dying.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import duckdb
import pytest
import significance_children
from cache_helpers import forget_kept_tests
from significance_children import in_thread
from test_tui_browse import compare, settle
from textual.worker import WorkerCancelled
from tui_synthetic import LAYERS, fill_cache

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results import compare as analysis_compare
from layerscope.analysis.results import pair_significance
from layerscope.analysis.results.compare import compare_runs
from layerscope.analysis.results.pair_significance import SIGNIFICANCE_MEMO
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.services.significance_pool import spawn_process
from layerscope.app.tui.widgets.chart.comparison_table import COLUMNS, TESTING, ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart

SIZE = (100, 32)
PROJECTIONS = 4  # q k v o: the synthetic runs' projections, one test each


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    SIGNIFICANCE_MEMO.clear()
    yield fill_cache(db)
    SIGNIFICANCE_MEMO.clear()


def kept_tests(path: Path) -> int:
    """The pairs' tests the cache file keeps (rows of kept_tests)."""
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM kept_tests").fetchone()
    return int(row[0]) if row else 0


def assert_no_tests_process_left() -> None:
    """The explorer closed: its tests' process is gone (ended and reaped)."""
    assert multiprocessing.active_children() == []


class Tally:
    """Counts the paired tests the explorer runs (one per pair and projection) and the chart's
    reads of curves; while `held`, a test waits until the test calls `release()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, held: bool = False) -> None:
        self.run: list[tuple[str, str, str]] = []
        self.reads = 0
        self.entered = threading.Event()
        self._gate = threading.Event()
        if not held:
            self._gate.set()
        paired_tests = pair_significance.paired_tests_of_projections
        compare_runs = analysis_compare.compare_runs

        def gated(run_a, run_b, projections, *args, **kwargs):
            self.entered.set()
            if not self._gate.wait(timeout=60):
                raise TimeoutError("the test never released the significance tests")
            self.run.extend((run_a, run_b, p.projection) for p in projections)
            return paired_tests(run_a, run_b, projections, *args, **kwargs)

        def counted(*args, **kwargs):
            self.reads += 1
            return compare_runs(*args, **kwargs)

        monkeypatch.setattr(pair_significance, "paired_tests_of_projections", gated)
        monkeypatch.setattr(analysis_compare, "compare_runs", counted)

    def release(self) -> None:
        self._gate.set()

    def take(self) -> tuple[int, int]:
        """(paired tests run, chart reads) since the last call."""
        counts = (len(self.run), self.reads)
        self.run.clear()
        self.reads = 0
        return counts


async def settle_reads(app: LayerscopeApp, pilot) -> None:
    """Let every read but the significance tests (held) finish and be shown."""
    for _ in range(3):
        for worker in [w for w in app.workers if w.group != "chart-tests"]:
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()


async def until(pilot, condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` while the app handles its messages (bounded)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def test_comparison_table_and_chart_mark_the_layers_that_differ(filled: dict[str, str]):
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected = {
        row.projection: row
        for row in compare_runs(ResultsCache(), [a, b], "nuclear_norm").significance
    }
    assert any(row.differing for row in expected.values())
    SIGNIFICANCE_MEMO.clear()
    forget_kept_tests(ResultsCache().path)  # computed by the explorer's own tests process
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b])
        pids = set(app.significance.pids)
        assert len(pids) == 1 and os.getpid() not in pids  # another process computed them
        table = app.query_one(ComparisonTable)
        header = table.csv_rows[0]
        assert header == list(COLUMNS)
        rows = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in table.csv_rows[1:]}
        for projection, test in expected.items():
            baseline = rows[("none_cot", projection)]
            assert baseline["verdict"] == ""
            row = rows[("detailed_cot", projection)]
            assert row["verdict"] == test.verdict
            assert row["pairing"] == test.pairing
            assert row["pairing"].startswith("paired: same questions")
            assert row["differing layers"] == " ".join(map(str, test.differing))
        # on screen: "sig." is differing/tested layers
        screen = [str(cell) for cell in table.get_row_at(LAYERS)]  # detailed_cot, q
        tested = len(expected["q"].tested)
        assert f"{len(expected['q'].differing)}/{tested}" in screen
        chart = app.query_one(LayerChart)
        assert chart.marks == {p: t.differing for p, t in expected.items()}
        drawn = chart.as_text(100, 24)
        assert "layer   * differs (q<0.05)" in drawn
        # a star row along the bottom of each panel, at the differing layers' x
        star_rows = [line for line in drawn.splitlines() if line.count("*") >= LAYERS]
        assert star_rows, drawn
        # in a gutter of their own: no y tick (no value such as 0.0) is written on their row
        for row in star_rows:
            for panel in row.split("│ │"):
                assert not any(c.isdigit() for c in panel.split("│")[0]), row
    assert_no_tests_process_left()


async def test_a_single_run_has_no_marks_and_no_verdict(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        chart = app.query_one(LayerChart)
        assert chart.marks == {}
        assert "differs" not in chart.as_text(100, 24)
        rows = app.query_one(ComparisonTable).csv_rows[1:]
        assert rows and all(row[8] == "" for row in rows)


async def test_the_curves_come_first_and_the_marks_when_the_tests_end(
    filled: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected = {
        row.projection: row
        for row in compare_runs(ResultsCache(), [a, b], "nuclear_norm").significance
    }
    assert any(row.differing for row in expected.values())
    SIGNIFICANCE_MEMO.clear()
    forget_kept_tests(ResultsCache().path)  # as for a pair never compared
    tests = Tally(monkeypatch, held=True)
    app = LayerscopeApp(poll_seconds=0, significance_executor=in_thread)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await compare(app, pilot, [a, b], settled=False)
            await settle_reads(app, pilot)
            await until(pilot, tests.entered.is_set, "the tests to start")
            # the curves and the MAD table are drawn while the tests run, which says so
            chart = app.query_one(LayerChart)
            assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
            assert chart.testing and chart.marks == {}
            drawn = chart.as_text(100, 24)
            assert "testing significance…" in drawn and "*" not in drawn
            table = app.query_one(ComparisonTable)
            header = table.csv_rows[0]
            rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in table.csv_rows[1:]}
            assert rows[("detailed_cot", "q")]["MAD all"] != ""
            assert rows[("detailed_cot", "q")]["verdict"] == TESTING
            assert rows[("none_cot", "q")]["verdict"] == ""
            assert "…" in [str(cell) for cell in table.get_row_at(LAYERS)]  # detailed_cot, q
            assert tests.take()[0] == 0
            # keys are answered while the tests run: a redraw needs no read
            await pilot.press("l")
            await pilot.press("b")
            await pilot.pause()
            assert chart.log_scale and chart.band != "none" and chart.testing
            assert "(log)" in chart.as_text(100, 24)
            assert tests.take() == (0, 0)
            tests.release()
            await settle(app, pilot)
            assert not chart.testing
            assert chart.marks == {p: t.differing for p, t in expected.items()}
            assert "* differs (q<0.05)" in chart.as_text(100, 24)
            rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in table.csv_rows[1:]}
            for projection, test in expected.items():
                assert rows[("detailed_cot", projection)]["verdict"] == test.verdict
            assert tests.take() == (PROJECTIONS, 0)  # one pair, tested once
    finally:
        tests.release()


async def test_redraws_and_coming_back_to_a_statistic_do_not_test_again(
    filled: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    a, b = filled["none_cot"], filled["detailed_cot"]
    tests = Tally(monkeypatch)
    app = LayerscopeApp(poll_seconds=0, significance_executor=in_thread)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b])
        chart = app.query_one(LayerChart)
        marks = chart.marks
        assert marks and not chart.testing
        assert tests.take()[0] == PROJECTIONS  # one pair, tested once
        await pilot.press("s")  # another statistic: another question, tested once
        await settle(app, pilot)
        assert chart.metric == "sigma1_ratio" and not chart.testing
        assert tests.take() == (PROJECTIONS, 1)
        await pilot.press("S")  # back: known, drawn with its marks at once
        await pilot.pause()
        await settle_reads(app, pilot)
        assert chart.metric == "nuclear_norm" and not chart.testing and chart.marks == marks
        assert tests.take() == (0, 1)
        # what only changes the drawing reads nothing and tests nothing
        for key in ("l", "l", "b", "b", "x", "x", "d", "w", "w"):
            await pilot.press(key)
        await settle(app, pilot)
        assert chart.marks == marks and not chart.log_scale
        assert tests.take() == (0, 0)


def expected_marks(a: str, b: str) -> dict[str, list[int]]:
    """The layers the tests mark, computed here; then forgotten, as for a pair never compared."""
    tests = compare_runs(ResultsCache(), [a, b], "nuclear_norm").significance
    marks = {row.projection: row.differing for row in tests}
    assert any(marks.values())
    SIGNIFICANCE_MEMO.clear()
    forget_kept_tests(ResultsCache().path)
    return marks


async def test_the_tests_run_in_a_process_of_their_own_after_the_curves(filled: dict[str, str]):
    """The spawned process computes the tests (held there until the test opens the gate) while
    the chart shows the curves and answers keys; the marks come from it, and the tests it kept
    in the file are its own (this process computed none). Closing the explorer ends it."""
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected = expected_marks(a, b)
    assert kept_tests(ResultsCache().path) == 0
    gate = multiprocessing.get_context("spawn").Semaphore(0)
    held = functools.partial(spawn_process, significance_children.hold, (gate,))
    app = LayerscopeApp(poll_seconds=0, significance_executor=held)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await compare(app, pilot, [a, b], settled=False)
            await settle_reads(app, pilot)
            chart = app.query_one(LayerChart)
            await until(
                pilot, lambda: {s.label for s in chart.series} == {"none_cot", "detailed_cot"},
                "the curves",
            )  # fmt: skip
            assert chart.testing and chart.marks == {}
            assert "testing significance…" in chart.as_text(100, 24)
            await pilot.press("l")
            await pilot.pause()
            assert chart.log_scale and chart.testing
            gate.release()
            await settle(app, pilot)
            assert not chart.testing
            assert chart.marks == expected
            pids = set(app.significance.pids)
            assert len(pids) == 1 and os.getpid() not in pids
            assert app.significance.cpu_seconds > 0
            assert len(SIGNIFICANCE_MEMO) == 0  # not computed (nor found) in this process
            assert kept_tests(ResultsCache().path) == 1  # one pair, kept by the child
    finally:
        gate.release()
    assert_no_tests_process_left()


async def test_a_tests_process_that_raises_gives_the_failed_tests_state(filled: dict[str, str]):
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected_marks(a, b)
    failing = functools.partial(spawn_process, significance_children.fail)
    app = LayerscopeApp(poll_seconds=0, significance_executor=failing)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b])
        chart = app.query_one(LayerChart)
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        assert not chart.testing and chart.marks == {}
        assert "testing significance…" not in chart.as_text(100, 24)
        table = app.query_one(ComparisonTable)
        header = table.csv_rows[0]
        rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in table.csv_rows[1:]}
        assert rows[("detailed_cot", "q")]["verdict"] == ""
        told = [str(n.message) for n in app._notifications]
        assert f"Could not test significance: {significance_children.FAILURE}" in told
    assert_no_tests_process_left()


async def test_a_tests_process_that_dies_is_replaced_at_the_next_test(filled: dict[str, str]):
    """A child that dies (killed, out of memory) fails its tests in one line; the next test
    starts a fresh process, which draws the marks."""
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected = expected_marks(a, b)
    pools: list[Executor] = []

    def dying_first() -> Executor:
        pools.append(spawn_process(significance_children.die) if not pools else spawn_process())
        return pools[-1]

    app = LayerscopeApp(poll_seconds=0, significance_executor=dying_first)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b])
        chart = app.query_one(LayerChart)
        assert not chart.testing and chart.marks == {}
        told = [str(n.message) for n in app._notifications]
        assert any(
            m.startswith("Could not test significance: the process computing them ended")
            for m in told
        ), told
        assert len(pools) == 1 and not app.significance.pids
        await pilot.press("s")  # another statistic, and back: the pair is tested again
        await settle(app, pilot)
        await pilot.press("S")
        await settle(app, pilot)
        assert chart.metric == "nuclear_norm" and not chart.testing
        assert chart.marks == expected
        assert len(pools) == 2  # a fresh pool
        assert len(app.significance.pids) == 1 and os.getpid() not in app.significance.pids
    assert_no_tests_process_left()


async def test_closing_the_explorer_while_it_tests_ends_the_tests_process(
    filled: dict[str, str],
):
    """Quitting does not wait for the tests (held in the child until the gate, which the test
    never opens): what is pending is cancelled and the child ended, none left behind."""
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected_marks(a, b)
    gate = multiprocessing.get_context("spawn").Semaphore(0)
    held = functools.partial(spawn_process, significance_children.hold, (gate,))
    app = LayerscopeApp(poll_seconds=0, significance_executor=held)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b], settled=False)
        await settle_reads(app, pilot)
        await until(pilot, lambda: len(multiprocessing.active_children()) == 1, "the child")
        assert app.query_one(LayerChart).testing
        closing = time.monotonic()
    assert time.monotonic() - closing < 30  # the child's gate waits 60 s
    assert_no_tests_process_left()
    assert kept_tests(ResultsCache().path) == 0
