"""The explorer's data flow: the App's one list of runs reaches every tab, the chart reads once
for the changes of its view made in one go, and takes the runs it reads from that list.

Why: the App used to push its runs into each pane by hand (four calls to keep in step), the
chart's read listed the cache's runs again on every read, and a handler that changed two things
of the view (a key, a scan, a restored session) read the chart once per change. Reads are
counted here by wrapping the analysis layer's functions, as the significance tests do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_browse import compare, leaf_labels, settle
from tui_synthetic import add_run, fill_cache

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results import compare as analysis_compare
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.kept_view import KeptView
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart

SIZE = (100, 32)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(path))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return path


class Counts:
    """The chart's reads of curves, the listings of the cache's runs, and the App's hearing
    that the chart's view changed, since the last `reset()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reset()
        compare_runs, runs = analysis_compare.compare_runs, ResultsCache.runs
        view_changed = KeptView.on_chart_view_changed

        def counted_reads(*args, **kwargs):
            self.reads += 1
            return compare_runs(*args, **kwargs)

        def counted_listings(cache: ResultsCache):
            self.listings += 1
            return runs(cache)

        def counted_view_changes(app: KeptView, message) -> None:
            self.view_changes += 1
            view_changed(app, message)

        monkeypatch.setattr(analysis_compare, "compare_runs", counted_reads)
        monkeypatch.setattr(ResultsCache, "runs", counted_listings)
        monkeypatch.setattr(KeptView, "on_chart_view_changed", counted_view_changes)

    def reset(self) -> None:
        self.reads = self.listings = self.view_changes = 0


async def test_a_scan_brings_its_runs_to_every_tab_from_the_one_list(db: Path):
    runs = fill_cache(db)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        browse = app.browse_tabs()
        panes = (browse.runs, browse.compare, browse.cosines, browse.samples)
        assert set(app.runs_by_id) == set(runs.values())
        assert all(pane.runs_by_id is app.runs_by_id for pane in panes)
        added = add_run(db, "simplified_cot_irrelevant")
        app.scan_cache()
        await settle(app, pilot)
        assert added in app.runs_by_id
        assert all(pane.runs_by_id is app.runs_by_id for pane in panes)
        assert set(leaf_labels(browse.runs)) == set(app.runs_by_id)


async def test_changes_of_the_view_made_in_one_go_read_the_chart_once(
    db: Path, monkeypatch: pytest.MonkeyPatch
):
    runs = fill_cache(db)
    counts = Counts(monkeypatch)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        pane = app.browse_tabs().compare
        counts.reset()

        def change() -> None:  # one handler: the statistic, a projection and the length filter
            pane.action_cycle_statistic(1)
            pane.action_toggle_projection("k")
            app.length_range = (1, 500)

        app.call_later(change)
        await settle(app, pilot)
        assert counts.reads == 1
        chart = app.query_one(LayerChart)
        assert (chart.metric, chart.projections) == ("sigma1_ratio", ["q", "v", "o"])
        assert "length 1-500" in str(pane.query_one("#chart-status").render())


async def test_a_chart_read_takes_its_runs_from_the_list_not_the_cache(
    db: Path, monkeypatch: pytest.MonkeyPatch
):
    runs = fill_cache(db)
    counts = Counts(monkeypatch)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        counts.reset()
        await pilot.press("s")
        await settle(app, pilot)
        assert (counts.reads, counts.listings) == (1, 0)
        assert app.query_one(LayerChart).metric == "sigma1_ratio"
        # a run the cache did not hold at the last scan is left out of the read
        pane = app.browse_tabs().compare
        pane.show_runs([runs["none_cot"], "f" * 32])
        await settle(app, pilot)
        assert {curve.run_id for curve in pane.curves} == {runs["none_cot"]}


async def test_a_scan_that_changes_an_overlaid_run_reads_the_chart_once_and_keeps_the_view(
    db: Path, monkeypatch: pytest.MonkeyPatch
):
    """New data is no change of the view: the chart reads again without saying it changed."""
    runs = fill_cache(db)
    counts = Counts(monkeypatch)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        counts.reset()
        ResultsCache(db).finish_run(runs["detailed_cot"], "cancelled")
        app.scan_cache()
        await settle(app, pilot)
        assert app.runs_by_id[runs["detailed_cot"]].status == "cancelled"
        assert (counts.reads, counts.view_changes) == (1, 0)
        # a scan that changes no overlaid run reads nothing
        ResultsCache(db).finish_run(runs["simplified_cot"], "cancelled")
        app.scan_cache()
        await settle(app, pilot)
        assert (counts.reads, counts.view_changes) == (1, 0)


async def test_a_read_in_flight_says_so_and_an_empty_answer_says_why(db: Path, monkeypatch):
    """While the chart's first read is on its way it says it is reading (it said "Select runs
    to compare", and after a restart said so for seconds while the header counted 2 runs); a
    length range that holds no sample of the runs says so, not "no data"."""
    import threading

    runs = fill_cache(db)
    gate = threading.Event()
    compare_runs = analysis_compare.compare_runs

    def held(*args, **kwargs):
        if not gate.wait(timeout=60):
            raise TimeoutError("the test never let the chart read")
        return compare_runs(*args, **kwargs)

    monkeypatch.setattr(analysis_compare, "compare_runs", held)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [runs["none_cot"], runs["detailed_cot"]], settled=False)
        chart = app.query_one(LayerChart)
        for _ in range(200):
            if chart.placeholder.startswith("Reading the curves of 2 runs"):
                break
            await pilot.pause()
        assert chart.placeholder == "Reading the curves of 2 runs…"
        assert not chart.series and "Reading the curves" in chart.empty_message()
        gate.set()
        await settle(app, pilot)
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        app.length_range = (100_000, 200_000)  # longer than any stored response
        await settle(app, pilot)
        assert not chart.series
        assert chart.placeholder.startswith("No samples of these runs in the length range")
