"""The Samples tab's marks, their export as a dataset, and the scatter, driven with Pilot over
a cache whose run names a real data file (no model, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_selection import records, stored_run
from test_tui_browse import compare, settle
from textual.widgets import DataTable

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import ResponseTypeSource, read_samples
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.widgets.samples.sample_scatter import MARKED_MARKER, SampleScatter
from layerscope.app.tui.widgets.samples.samples_view import MARK, SamplesPane

SIZE = (100, 32)


@pytest.fixture
def scored_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    data = tmp_path / "scored.json"
    data.write_text(json.dumps(records()))
    return stored_run(ResultsCache(db, lock_timeout=5), data)


def marks_shown(table: DataTable) -> dict[str, str]:
    """Sample index -> its first cell, for every row of the table."""
    return {
        str(table.get_row_at(r)[1]): str(table.get_row_at(r)[0]) for r in range(table.row_count)
    }


async def test_mark_the_top_samples_and_write_them_as_a_dataset(scored_run: str, tmp_path: Path):
    app = LayerscopeApp(poll_seconds=0)
    out = tmp_path / "chosen"
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [scored_run])
        await pilot.press("5")
        await settle(app, pilot)
        pane = app.query_one(SamplesPane)
        table = app.query_one("#samples-table", DataTable)
        # sort by nuclear norm (descending): the synthetic norm grows with the index
        table.move_cursor(column=[k.value for k in table.columns].index("nuclear_norm"))
        await pilot.press("s")
        await settle(app, pilot)
        assert [row.index for row in pane.rows] == list(range(7, -1, -1))
        table.move_cursor(row=2)
        await pilot.press("M")  # every row down to the cursor: the top 3
        await pilot.pause()
        shown = marks_shown(table)
        assert [i for i, cell in shown.items() if cell == MARK] == ["7", "6", "5"]
        assert all(cell == "" for i, cell in shown.items() if i not in ("7", "6", "5"))
        table.move_cursor(row=5)
        await pilot.press("m")  # one more (index 2), then unmarked again
        await pilot.pause()
        assert pane.marked == {7, 6, 5, 2}
        await pilot.press("m")
        await pilot.pause()
        assert pane.marked == {7, 6, 5} and pane.selection_label() == "top-3-by-nuclear_norm"
        assert "● 3 marked" in str(app.query_one("#samples-caption").render())

        await pilot.press("w")
        await pilot.pause()
        field = app.screen.query_one("#export-folder")
        field.value = str(out)
        await pilot.press("enter")
        await settle(app, pilot)
    [written] = out.glob("*.json")
    assert written.name.endswith("top-3-by-nuclear_norm.json")
    assert json.loads(written.read_text()) == [records()[i] for i in (7, 6, 5)]
    again = read_samples(ResponseTypeSource("chosen", written.stem, written, "correct"))
    assert [s.index for s in again] == [0, 1, 2] and again[0].numeric_fields["reward"] == 9.0


async def test_writing_with_nothing_marked_says_how_to_mark(scored_run: str):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [scored_run])
        await pilot.press("5")
        await settle(app, pilot)
        await pilot.press("w")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1].startswith("No sample is marked")


async def test_scatter_of_a_statistic_against_length_then_loss(scored_run: str):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [scored_run])
        await pilot.press("5")
        await settle(app, pilot)
        pane = app.query_one(SamplesPane)
        table = app.query_one("#samples-table", DataTable)
        table.move_cursor(row=0)
        await pilot.press("m")
        marked = next(iter(pane.marked))
        await pilot.press("p")
        await settle(app, pilot)
        scatter = app.query_one(SampleScatter)
        assert scatter.display and not table.display
        rows = {row.index: row for row in pane.rows}
        assert sorted(scatter.points) == sorted(
            (i, float(r.response_tokens), r.stats["nuclear_norm"]) for i, r in rows.items()
        )
        text = scatter.as_text(100, 20)
        # the synthetic response length (20 + index) rises with the nuclear norm: rho +1
        assert "nuclear_norm against response tokens · Spearman rho +1.00 (n 8)" in text
        assert f"{MARKED_MARKER * 2} 1 marked" in text and "7 samples" in text
        assert scatter.marked == {marked}
        await pilot.press("p")
        await settle(app, pilot)
        assert sorted(scatter.points) == sorted(
            (i, r.loss, r.stats["nuclear_norm"]) for i, r in rows.items()
        )
        assert "against loss" in scatter.as_text(80, 20)
        await pilot.press("p")
        await settle(app, pilot)
        assert table.display and not scatter.display
