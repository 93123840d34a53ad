"""The explorer says whether overlaid runs differ: the comparison table's "sig." column and
verdict, and a star under each layer that differs on the chart, legible without colour."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_browse import compare, settle
from tui_synthetic import LAYERS, fill_cache

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.compare import compare_runs
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.widgets.comparison_table import COLUMNS, ComparisonTable
from layerscope.app.tui.widgets.layer_chart import LayerChart

SIZE = (100, 32)


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return fill_cache(db)


async def test_comparison_table_and_chart_mark_the_layers_that_differ(filled: dict[str, str]):
    a, b = filled["none_cot"], filled["detailed_cot"]
    expected = {
        row.projection: row
        for row in compare_runs(ResultsCache(), [a, b], "nuclear_norm").significance
    }
    assert any(row.differing for row in expected.values())
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [a, b])
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
