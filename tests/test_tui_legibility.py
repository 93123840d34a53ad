"""The explorer read without colour and at 80x24: every series, box and state told apart by glyph.

Colour is lost in tmux without 256 colours, over plain SSH, with NO_COLOR and in the chart's
text export, so these tests check what a user reads in plain characters: each overlaid run has
its own marker and the legend pairs it with the run's name, checked and unchecked boxes and the
selected mode differ by glyph, panel titles keep their projection, every layer is a tick when
they fit, the comparison table and the footer fit 80 columns, and the cosine map grows with its
panel. Driven in-process over synthetic runs (tui_synthetic); no model, no torch.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from textual.worker import WorkerCancelled
from tui_synthetic import LAYERS, fill_cache

from layerscope.app.compat.textual import FooterKey, FooterLabel, KeyGroup
from layerscope.app.labels import run_settings
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.commands import help_sections
from layerscope.app.tui.export import write_exports
from layerscope.app.tui.screens.sample_detail import SampleDetailScreen
from layerscope.app.tui.widgets.chart.compare_view import ComparePane
from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.cosines.cosine_heatmap import CosineHeatmap, cell_layout
from layerscope.app.tui.widgets.frame.fitted_footer import FittedFooter
from layerscope.app.tui.widgets.samples.sample_chart import SampleChart
from layerscope.app.tui.widgets.setup.check_list import CheckList
from layerscope.app.tui.widgets.setup.marked_radio_button import MarkedRadioButton

SMALL = (80, 24)
LARGE = (120, 40)
BRAILLE = re.compile("[\u2801-\u28ff]")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return fill_cache(db)


async def settle(app: LayerscopeApp, pilot) -> None:
    """Until no worker runs (a read may start another), then one more frame."""
    for _ in range(50):
        with contextlib.suppress(WorkerCancelled):
            await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(worker.is_running for worker in app.workers):
            break
    await pilot.pause()


async def chart_of(app: LayerscopeApp, pilot, run_ids: list[str]) -> LayerChart:
    await settle(app, pilot)
    app.set_comparison(run_ids)
    await pilot.press("3")
    await settle(app, pilot)
    return app.query_one(LayerChart)


def legend_pairs(legend_line: str) -> list[tuple[str, str]]:
    """(marker, label) pairs of a one-line legend: ' ⠤⠤ none_cot •• detailed_cot ...'."""
    return re.findall(r" (\S)\1 (.+?)(?= \S\S |$)", legend_line.rstrip())


def occurs(marker: str, plot: str) -> bool:
    """Whether a legend marker's characters are drawn in the plot area."""
    if BRAILLE.fullmatch(marker):
        return BRAILLE.search(plot) is not None
    return marker in plot


async def test_chart_text_export_gives_every_run_its_own_marker(runs: dict[str, str], tmp_path):
    """Colour on (as in a normal terminal): the text export still tells four runs apart."""
    order = ["none_cot", "simplified_cot", "detailed_cot", "none_cot_irrelevant"]
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=LARGE) as pilot:
        await chart_of(app, pilot, [runs[name] for name in order])
        text = app.query_one(ComparePane).export_chart_text()
    written = write_exports(tmp_path / "out", {"chart": text}, {})
    exported = written[0].read_text(encoding="utf-8")
    legend, plot = exported.split("\n", 1)[0], exported.split("\n", 1)[1]
    pairs = legend_pairs(legend)
    assert [label for _, label in pairs] == order, legend
    markers = [marker for marker, _ in pairs]
    assert len(set(markers)) == len(order), legend
    for marker, label in pairs:
        assert occurs(marker, plot), f"{label}'s marker {marker!r} is not drawn"
    assert "━━" not in legend


async def test_no_color_chart_titles_ticks_and_axis_label_at_80x24(
    runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NO_COLOR", "1")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        chart = await chart_of(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        pane = app.query_one(ComparePane)
        pane.set_metric("nuclear_per_loss")  # the longest statistic name
        await settle(app, pilot)
        width, height = chart.content_size.width, chart.content_size.height
        drawn = chart.as_text(width, height)
    for projection in "qkvo":
        assert f"{projection}: nuclear_per" in drawn, drawn
    assert "…" in drawn  # the statistic is shortened, the projection kept
    tick_line = next(line for line in drawn.splitlines() if re.search(r"\b0 +1 +2\b", line))
    # every layer a tick, in each of the 4 panels
    assert tick_line.split() == [str(layer) for layer in range(LAYERS)] * 4
    assert drawn.count("layer") >= 4


async def test_legend_shows_run_settings_on_request(runs: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=LARGE) as pilot:
        chart = await chart_of(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        short = chart.header(118)
        assert short is not None and len(short.plain.splitlines()) == 1
        chart.focus()
        await pilot.press("d")
        await settle(app, pilot)
        detailed = chart.header(118)
        assert detailed is not None
        lines = detailed.plain.splitlines()
        for line, name in zip(lines, ("none_cot", "detailed_cot"), strict=True):
            assert name in line
            assert run_settings(app.runs_by_id[runs[name]]) in line
        assert "max length 512" in lines[0]
        # the figure gives up the lines the legend takes, and still draws both runs
        drawn = chart.as_text(118, 30)
        plot = drawn.split("\n", 2)[2]
        assert drawn.count("\n") <= 30 and BRAILLE.search(plot) and "•" in plot
        await pilot.press("d")
        await settle(app, pilot)
        assert len(chart.header(118).plain.splitlines()) == 1  # type: ignore[union-attr]
        help_keys = [b.id for _, bindings in help_sections(app) for b in bindings]
    assert "chart.legend_settings" in help_keys  # listed in help, with its description


async def test_sample_detail_tells_the_sample_from_the_run_mean_without_colour(
    runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NO_COLOR", "1")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        await chart_of(app, pilot, [runs["none_cot"]])
        await pilot.press("5")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, SampleDetailScreen)
        chart = app.screen.query_one(SampleChart)
        drawn = chart.as_text(chart.content_size.width, chart.content_size.height)
    legend, plot = drawn.split("\n", 1)
    pairs = legend_pairs(legend)
    assert [label for _, label in pairs] == ["run mean", "this sample"], legend
    assert len({marker for marker, _ in pairs}) == 2
    for marker, label in pairs:
        assert occurs(marker, plot), f"{label}'s marker {marker!r} is not drawn"
    assert "layer" in plot


def box_glyph(check_list: CheckList[str], line: int) -> str:
    return check_list.render_line(line).text[1]


async def test_checked_and_unchecked_boxes_and_the_mode_differ_by_glyph(
    runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NO_COLOR", "1")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        types = app.query_one("#type-list", CheckList)
        values = [types.get_option_at_index(i).value for i in range(types.option_count)]
        glyphs = [box_glyph(types, i) for i in range(len(values))]
        assert {glyphs[i] for i, v in enumerate(values) if v in types.selected} == {"✓"}
        assert {glyphs[i] for i, v in enumerate(values) if v not in types.selected} == {" "}
        # space on the highlighted type toggles it, and its box's glyph with it
        types.focus()
        types.highlighted = 0
        before = box_glyph(types, 0)
        await pilot.press("space")
        await pilot.pause()
        after = box_glyph(types, 0)
        assert {before, after} == {"✓", " "}
        assert (values[0] in types.selected) == (after == "✓")

        base = app.query_one("#mode-base", MarkedRadioButton)
        instruct = app.query_one("#mode-instruct", MarkedRadioButton)
        assert (base.value, instruct.value) == (True, False)
        assert "●" in base.render().plain and "○" in instruct.render().plain
        app.query_one("#mode-set").focus()  # the keys of the radio set: move, then select
        await pilot.press("right", "space")
        await pilot.pause()
        assert (base.value, instruct.value) == (False, True)
        assert "○" in base.render().plain and "●" in instruct.render().plain


async def test_footer_at_80_columns_shows_whole_entries_only(runs: dict[str, str]):
    """The chart's keys do not all fit 80 columns: those that do not are hidden, not cut, and
    nothing of the row shows beside the palette key (it leaked as 'paletteC')."""
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        await chart_of(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        footer = app.screen.query_one(FittedFooter)
        palette = next(key for key in footer.query(FooterKey) if key.has_class("-command-palette"))
        entries = [
            widget
            for widget in footer.children
            if isinstance(widget, FooterKey | KeyGroup | FooterLabel) and widget is not palette
        ]
        shown = [widget for widget in entries if widget.visible]
        hidden = [widget for widget in entries if not widget.visible]
        assert shown and hidden
        assert all(widget.region.right <= palette.region.x for widget in shown)
        assert palette.region.right == app.screen.size.width  # nothing to its right
        # help leads the row, so it is never the key hidden: it tells the hidden ones
        assert isinstance(shown[0], FooterKey) and shown[0].action == "help"
        await pilot.press("2")  # the Runs tab has other keys of its own: help still leads
        await pilot.pause()
        footer = app.screen.query_one(FittedFooter)
        first = next(widget for widget in footer.children if widget.visible)
        assert isinstance(first, FooterKey) and first.action == "help"
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        # under the dialog the Runs tab's row is still whole (it showed a cut "r R" there)
        await pilot.pause()
        footer = app.screen_stack[0].query_one(FittedFooter)
        palette = next(key for key in footer.query(FooterKey) if key.has_class("-command-palette"))
        under = [w for w in footer.children if w.visible and w is not palette]
        assert under and all(widget.region.right <= palette.region.x for widget in under)


async def test_comparison_table_fits_80_columns(runs: dict[str, str]):
    """Two-part run labels ('detailed_cot instruct'): every column on screen, no sideways
    scrolling needed."""
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        await chart_of(
            app,
            pilot,
            [runs["simplified_cot"], runs["detailed_cot"], runs["detailed_cot/instruct"]],
        )
        table = app.query_one(ComparisonTable)
        await settle(app, pilot)
        assert table.row_count == 12
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert [str(column.label) for column in table.columns.values()][-1] == "sig"


def test_cosine_cells_grow_with_the_panel_and_still_fit():
    for size in (6, 16, 32):
        small = cell_layout(size, 78, 20)
        large = cell_layout(size, 118, 36)
        for (cell, lines, half), (width, height) in ((small, (78, 20)), (large, (118, 36))):
            rows = (size + 1) // 2 if half else size * lines
            assert len(str(size - 1)) + 1 + size * cell <= width
            assert rows + 4 <= height
        assert large[0] * large[1] >= small[0] * small[1]
    assert cell_layout(6, 118, 36)[:2] == (10, 5)  # fills the height at 120x40


async def test_cosine_heatmap_uses_the_room_at_120x40(runs: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=LARGE) as pilot:
        await chart_of(app, pilot, [runs["none_cot"]])
        await pilot.press("4")
        await settle(app, pilot)
        heatmap = app.query_one(CosineHeatmap)
        rendered = heatmap.render()
        lines = rendered.plain.splitlines()  # type: ignore[union-attr]
        height = heatmap.content_size.height
        assert len(lines) <= height
        assert len(lines) >= height * 0.75  # the map fills most of the panel's height


@pytest.mark.parametrize(
    ("low", "high", "most", "ticks"),
    [
        (0.0, 1.0, 5, [0.0, 0.5, 1.0]),
        (0.013, 0.0917, 4, [0.02, 0.04, 0.06, 0.08]),
        (-3.2, 2.7, 4, [-2.0, 0.0, 2.0]),
        (5.0, 5.0, 4, [5.0]),
    ],
)
def test_the_y_ticks_stop_at_the_data_above_the_stars_gutter(low, high, most, ticks):
    from layerscope.app.tui.widgets.chart.layer_chart import gutter_ticks

    found = gutter_ticks(low, high, most)
    assert found == pytest.approx(ticks)
    assert len(found) <= most and min(found) >= low and max(found) <= high


async def test_p_shows_one_projection_at_a_time_on_the_whole_width_at_80x24(
    runs: dict[str, str],
):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        chart = await chart_of(app, pilot, [runs["none_cot"], runs["detailed_cot"]])
        pane = app.query_one(ComparePane)
        table = app.query_one(ComparisonTable)
        assert table.row_count == 8  # 2 runs x 4 projections
        seen = []
        for _ in range(5):
            await pilot.press("p")
            await settle(app, pilot)
            seen.append(pane.projection_order())
            drawn = chart.as_text(chart.content_size.width, chart.content_size.height)
            titles = [p for p in "qkvo" if f"{p}: nuclear" in drawn]
            assert titles == seen[-1], drawn
        assert seen == [["q"], ["k"], ["v"], ["o"], ["q", "k", "v", "o"]]
        await pilot.press("p")
        await settle(app, pilot)
        assert table.row_count == 2  # the table follows: one projection's rows
        drawn = chart.as_text(chart.content_size.width, chart.content_size.height)
        tick_line = next(line for line in drawn.splitlines() if re.search(r"\b0 +1 +2\b", line))
        # one panel across the width: the layer ticks spread over nearly all of it
        assert tick_line.rstrip().endswith(str(LAYERS - 1))
        assert len(tick_line.rstrip()) >= chart.content_size.width - 6


async def test_a_statistic_the_runs_were_computed_without_is_said_not_drawn_empty(
    runs: dict[str, str], tmp_path: Path
):
    """`check` stores no entry statistics: charting `max` of its runs said nothing at all
    (four empty panels and a table of dashes)."""
    import os

    from tui_synthetic import batch, begin, sample_text

    from layerscope.analysis.base.records import ENTRY_STATISTICS, BatchResult, MatrixStatistics
    from layerscope.analysis.cache import ResultsCache

    db = Path(os.environ["LAYERSCOPE_DB"])
    run_id = begin(db, "none_cot", model="checked")
    full = batch("none_cot", [0, 1, 2], 3)
    for result in full.results:
        result.matrices = [
            MatrixStatistics(m.layer, m.projection, {
                k: v for k, v in m.values.items() if k not in ENTRY_STATISTICS
            })
            for m in result.matrices
        ]  # fmt: skip
    texts = {i: sample_text("none_cot", i) for i in range(3)}
    ResultsCache(db).write_batch(run_id, BatchResult(full.results, [], 3, 3), texts)
    ResultsCache(db).finish_run(run_id, "complete")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SMALL) as pilot:
        chart = await chart_of(app, pilot, [run_id])
        app.query_one(ComparePane).set_metric("max")
        await settle(app, pilot)
        drawn = chart.as_text(chart.content_size.width, chart.content_size.height)
        assert "No max in these runs: they were computed without entry statistics" in drawn
        app.query_one(ComparePane).set_metric("nuclear_norm")
        await settle(app, pilot)
        drawn = chart.as_text(chart.content_size.width, chart.content_size.height)
        assert "q: nuclear_norm" in drawn
