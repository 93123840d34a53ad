"""The explorer over a cache of synthetic runs: browse, overlay, compare, sort, inspect, export.

Driven in-process with Textual's Pilot; no model and no torch are involved (the cache is filled
through its own writing API by tui_synthetic), which is exactly the situation of a user looking
at results computed elsewhere.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from textual.widgets import DataTable, TabbedContent
from textual.worker import WorkerCancelled
from tui_synthetic import LAYERS, add_run

from layerscope.analysis.cache import ResultsCache
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.screens.help import HelpScreen
from layerscope.app.tui.screens.length_filter import LengthFilterScreen, parse_length_range
from layerscope.app.tui.screens.sample_detail import SampleDetailScreen
from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.cosines.cosine_heatmap import CosineHeatmap
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
from layerscope.app.tui.widgets.samples.sample_chart import SampleChart
from layerscope.app.tui.widgets.samples.samples_view import SamplesPane

SIZE = (100, 32)


async def settle(app: LayerscopeApp, pilot) -> None:
    """Let workers finish and their messages be handled (again: loads trigger loads).

    A superseded exclusive worker (a check replaced by a newer one) ends cancelled: fine here.
    """
    for _ in range(3):
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:
            continue
        await pilot.pause()


def leaf_labels(tree: RunsBrowser) -> dict[str, str]:
    labels: dict[str, str] = {}

    def visit(node) -> None:
        for child in node.children:
            if child.data:
                labels[child.data] = str(child.label)
            visit(child)

    visit(tree.root)
    return labels


async def compare(app: LayerscopeApp, pilot, run_ids: list[str], *, settled: bool = True) -> None:
    """Mark runs in the Runs tab by keyboard (space), then open the chart (enter); `settled`:
    wait for every read it started (a test that holds one back waits itself)."""
    await pilot.press("2")
    await settle(app, pilot)
    tree = app.query_one(RunsBrowser)
    for run_id in run_ids:
        for line in range(tree.last_line + 1):
            node = tree.get_node_at_line(line)
            if node is not None and node.data == run_id:
                tree.cursor_line = line
                break
        await pilot.pause()
        await pilot.press("space")
    await pilot.press("enter")
    if settled:
        await settle(app, pilot)


async def test_runs_browser_shows_every_run_with_status_and_counts(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        labels = leaf_labels(app.query_one(RunsBrowser))
        assert set(labels) == set(filled.values())
        assert "complete" in labels[filled["none_cot"]]
        assert "12/12 (1 skipped)" in labels[filled["none_cot"]]
        instruct = labels[filled["detailed_cot/instruct"]]
        assert "instruct" in instruct and "cancelled" in instruct and "8/12" in instruct


async def test_overlaying_two_runs_draws_both_curves_and_fills_the_mad_table(
    filled: dict[str, str],
):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"], filled["detailed_cot"]])
        assert app.query_one(TabbedContent).active == "chart"
        assert app.comparison == [filled["none_cot"], filled["detailed_cot"]]
        chart = app.query_one(LayerChart)
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        assert {s.projection for s in chart.series} == {"q", "k", "v", "o"}
        assert all(len(s.mean) == LAYERS for s in chart.series)
        # Runs have different colours, and the legend names them.
        assert len({s.colour for s in chart.series}) == 2
        drawn = chart.as_text(100, 24)
        assert "none_cot" in drawn and "detailed_cot" in drawn
        table = app.query_one(ComparisonTable)
        assert table.row_count == 8  # 2 runs x 4 projections
        rows = table.csv_rows[1:]
        baseline = [row for row in rows if row[0] == "none_cot"]
        other = [row for row in rows if row[0] == "detailed_cot"]
        assert all(row[6] == "baseline" for row in baseline)
        # Slow thinking has flatter curves (smaller MAD) and differs from the baseline.
        for fast, slow in zip(baseline, other, strict=True):
            assert float(slow[2]) < float(fast[2])
            assert float(slow[6]) > 0.1
            assert slow[7].count("(") == 3  # three layers where the difference is largest


async def test_chart_keys_switch_statistic_projections_scale_and_interval(
    filled: dict[str, str],
):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"], filled["simplified_cot"]])
        chart = app.query_one(LayerChart)
        nuclear = {(s.label, s.projection): s.mean for s in chart.series}
        await pilot.press("s")
        await settle(app, pilot)
        assert chart.metric == "sigma1_ratio"
        assert {(s.label, s.projection): s.mean for s in chart.series} != nuclear
        await pilot.press("q", "k")
        await settle(app, pilot)
        assert chart.projections == ["v", "o"]
        assert app.query_one(ComparisonTable).row_count == 4
        await pilot.press("l")
        await settle(app, pilot)
        assert chart.log_scale and not chart.log_refused
        await pilot.press("b")
        await settle(app, pilot)
        assert chart.band == "band"
        assert "95% CI band" in str(app.query_one("#chart-status").render())
        # each run's band has its own character, named in the legend (NO_COLOR: no colour)
        assert [s.band_marker for s in chart.series if s.projection == "v"] == ["·", "'"]
        legend = chart.header(200)
        assert legend is not None
        assert "none_cot (· CI)" in legend.plain and "simplified_cot (' CI)" in legend.plain
        drawn = chart.as_text(100, 24)
        assert "'" in drawn and "·" in drawn
        # "mean" has negative values: log scale is refused instead of failing.
        while chart.metric != "mean":
            await pilot.press("s")
            await settle(app, pilot)
        assert chart.log_refused
        assert "(chart could not be drawn" not in chart.as_text(100, 24)


async def test_loss_is_drawn_as_one_bar_per_run(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"], filled["none_cot_irrelevant"]])
        await pilot.press("S")  # previous statistic from nuclear_norm wraps to loss
        await settle(app, pilot)
        chart = app.query_one(LayerChart)
        assert chart.metric == "loss"
        assert [s.projection for s in chart.series] == ["loss", "loss"]
        text = chart.as_text(100, 20)
        assert "loss (mean over samples)" in text and "█" in text


async def test_response_length_filter_restricts_the_samples(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, LengthFilterScreen)
        await pilot.press("5", "-", "9", "enter")  # none_cot responses have 8 tokens
        await settle(app, pilot)
        assert app.query_one(LayerChart).series
        await pilot.press("f")
        await pilot.pause()
        await pilot.press("ctrl+a", "ctrl+k", "4", "0", "-", "enter")
        await settle(app, pilot)
        chart = app.query_one(LayerChart)
        assert chart.series == [] or all(not s.mean for s in chart.series)
        assert "length 40-" in str(app.query_one("#chart-status").render())


def test_length_range_parsing_names_the_problem():
    assert parse_length_range("50-200") == (50, 200)
    assert parse_length_range("100-")[0] == 100
    assert parse_length_range(" -80") == (0, 80)
    assert parse_length_range("") is None
    with pytest.raises(ValueError, match="range like"):
        parse_length_range("50")
    with pytest.raises(ValueError, match="empty"):
        parse_length_range("9-3")


async def test_samples_sort_by_any_column_and_open_the_hardest(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["detailed_cot"]])
        await pilot.press("5")
        await settle(app, pilot)
        pane = app.query_one(SamplesPane)
        assert pane.run_id == filled["detailed_cot"]
        losses = [row.loss for row in pane.rows]
        assert len(losses) == 11  # 12 samples, one skipped
        assert losses == sorted(losses, reverse=True)
        table = app.query_one("#samples-table", DataTable)
        # Sort by effective rank: move to its column and press s; again reverses.
        column = [key.value for key in table.columns].index("effective_rank")
        table.move_cursor(column=column)
        await pilot.press("s")
        await settle(app, pilot)
        ranks = [row.stats["effective_rank"] for row in pane.rows]
        assert pane.sort_by == "effective_rank" and ranks == sorted(ranks, reverse=True)
        await pilot.press("s")
        await settle(app, pilot)
        assert [row.stats["effective_rank"] for row in pane.rows] == sorted(ranks)
        # Back to loss, open the hardest sample.
        table.move_cursor(row=0, column=[key.value for key in table.columns].index("loss"))
        await pilot.press("s")  # a new column sorts descending first
        await settle(app, pilot)
        assert pane.sort_by == "loss" and pane.descending
        hardest = pane.rows[0]
        assert hardest.loss == max(losses)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, SampleDetailScreen)
        assert str(app.screen.query_one("#sample-prompt").render()) == hardest.instruction
        chart = app.screen.query_one(SampleChart)
        assert len(chart.sample) == LAYERS and len(chart.mean) == LAYERS
        assert chart.sample != chart.mean
        await pilot.press("p")
        await settle(app, pilot)
        assert app.screen.projection == "k"
        await pilot.press("escape")
        assert not isinstance(app.screen, SampleDetailScreen)


async def test_cosine_heatmap_shows_the_mean_matrix_and_the_cell_under_the_cursor(
    filled: dict[str, str], cache_path: Path
):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        await pilot.press("4")
        await settle(app, pilot)
        heatmap = app.query_one(CosineHeatmap)
        expected = ResultsCache(cache_path).layer_cosines(filled["none_cot"], "q")
        assert heatmap.matrix == expected and len(expected) == LAYERS
        await pilot.press("right", "right", "down")
        text = str(heatmap.render())
        assert f"layer 1 x layer 2: {expected[1][2]:.3f}" in text
        await pilot.press("o")
        await settle(app, pilot)
        assert "projection o" in str(app.query_one("#cosine-status").render())


async def test_export_writes_the_chart_as_text_and_the_table_as_csv(
    filled: dict[str, str], tmp_path: Path
):
    app = LayerscopeApp(poll_seconds=0)
    out = tmp_path / "exported"
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"], filled["detailed_cot"]])
        await pilot.press("e")
        await pilot.pause()
        field = app.screen.query_one("#export-folder")
        field.value = str(out)
        await pilot.press("enter")
        await settle(app, pilot)
    chart = (out / "chart-nuclear_norm.txt").read_text()
    assert "q: nuclear_norm" in chart and "detailed_cot" in chart
    assert "\x1b[" not in chart  # plain text, no colour codes
    with open(out / "comparison-nuclear_norm.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["run", "proj", "MAD all"]
    assert len(rows) == 9
    assert all(math.isfinite(float(row[2])) for row in rows[1:])


async def test_help_lists_every_key_and_closes(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        titles = [title for title, _ in app.screen.sections]
        assert titles[:3] == ["Everywhere", "Chart tab", "Runs tab"]
        keys = {b.key for _, bindings in app.screen.sections for b in bindings}
        assert {"r", "c", "e", "s", "space", "b", "l", "f"} <= keys
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)


async def test_every_binding_has_a_description_and_an_id():
    from layerscope.app.tui.widgets.chart.compare_view import ComparePane
    from layerscope.app.tui.widgets.cosines.cosine_heatmap import CosineHeatmap as Heatmap
    from layerscope.app.tui.widgets.cosines.cosine_view import CosinePane

    owners = [LayerscopeApp, ComparePane, CosinePane, Heatmap, RunsBrowser, SamplesPane]
    owners += [SampleDetailScreen, HelpScreen, LengthFilterScreen]
    ids = []
    for owner in owners:
        for binding in owner.BINDINGS:
            assert binding.description, (owner.__name__, binding.key)
            assert binding.id, (owner.__name__, binding.key)
            ids.append(binding.id)
    assert len(ids) == len(set(ids))


async def test_a_run_still_being_written_elsewhere_appears_and_grows(cache_path: Path):
    partial = add_run(cache_path, "none_cot", samples=12, stored=4, status="running")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [partial])
        label = leaf_labels(app.query_one(RunsBrowser))[partial]
        assert "running" in label or "cancelled" in label  # same host: alive or not
        counts = app.query_one(LayerChart).series[0]
        assert counts.mean
        # Another process stores more samples: a scan picks them up and redraws the chart.
        add_run(cache_path, "none_cot", samples=12, stored=12, status="complete")
        app.scan_cache()
        await settle(app, pilot)
        label = leaf_labels(app.query_one(RunsBrowser))[partial]
        assert "complete" in label and "12/12" in label


def test_browsing_works_when_torch_cannot_be_imported(filled: dict[str, str], cache_path: Path):
    """In a fresh interpreter with torch blocked: start, browse, overlay; torch never loads."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys

        class Blocker:
            # Any attempt to import torch or transformers is recorded and fails.
            attempts = []

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    Blocker.attempts.append(name)
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Blocker())
        from layerscope.app.tui.app import LayerscopeApp
        from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
        from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable

        async def main():
            app = LayerscopeApp(db={str(cache_path)!r}, poll_seconds=0)
            async with app.run_test(size=(100, 32)) as pilot:
                for _ in range(3):
                    await app.workers.wait_for_complete(); await pilot.pause()
                runs = sorted(app.runs_by_id)
                app.set_comparison(runs[:2])
                await pilot.press("3")
                for _ in range(3):
                    await app.workers.wait_for_complete(); await pilot.pause()
                series = app.query_one(LayerChart).series
                print("RUNS", len(runs), "SERIES", len(series),
                      "ROWS", app.query_one(ComparisonTable).row_count)
                await pilot.press("5")
                for _ in range(3):
                    await app.workers.wait_for_complete(); await pilot.pause()
                print("SAMPLES", len(app.query_one("#samples-table").rows))
        asyncio.run(main())
        print("ATTEMPTS", Blocker.attempts)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUNS 5 SERIES 8 ROWS 8" in result.stdout
    assert "SAMPLES 11" in result.stdout
    assert "ATTEMPTS []" in result.stdout


async def test_an_unexpected_error_while_reading_is_reported_not_fatal(
    filled: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    def broken(self, run_id, projection):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ResultsCache, "layer_cosines", broken)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        await pilot.press("4")
        await settle(app, pilot)
        log = "\n".join(app.query_one(LogPanel).lines_recorded)
        assert "Internal error: RuntimeError: disk on fire" in log
        await pilot.press("3")  # still alive and drawing
        await settle(app, pilot)
        assert app.query_one(LayerChart).series
