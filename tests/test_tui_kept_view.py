"""The chart as it was left: its overlaid runs and view settings come back at the next start.

A researcher comparing the same runs day after day used to mark them again, and pick the
statistic, projections, interval and scale again, at every start. Driven in-process over
synthetic runs; each test is two sessions of the explorer on one state file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tui_browse import compare, leaf_labels, settle
from textual.widgets import TabbedContent
from tui_synthetic import add_run, fill_cache

from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.state import load_state
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser

SIZE = (80, 24)


@pytest.fixture
def state_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state.json"
    monkeypatch.setenv("LAYERSCOPE_STATE", str(path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("LAYERSCOPE_DB", raising=False)
    return path


async def first_session(db: Path, run_ids: list[str]) -> None:
    """Overlay these runs, then: next statistic, hide q, CI band, log scale; quit."""
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, run_ids)
        await pilot.press("s", "q", "b", "l")
        await settle(app, pilot)
        chart = app.query_one(LayerChart)
        assert (chart.metric, chart.projections) == ("sigma1_ratio", ["k", "v", "o"])
        await pilot.press("ctrl+q")


async def test_overlaid_runs_and_view_settings_come_back(state_path: Path, tmp_path: Path):
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    overlaid = [runs["detailed_cot"], runs["none_cot"]]  # in this order: the first is baseline
    await first_session(db, overlaid)
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.comparison == overlaid
        assert app.query_one(TabbedContent).active == "chart"  # where the last session ended
        await pilot.press("3")
        await settle(app, pilot)
        chart = app.query_one(LayerChart)
        assert chart.metric == "sigma1_ratio"
        assert chart.projections == ["k", "v", "o"]
        assert chart.band == "band" and chart.log_scale
        assert [s.label for s in chart.series][::3] == ["detailed_cot", "none_cot"]
        status = str(app.query_one("#chart-status").render())
        assert "sigma1_ratio · k v o · 95% CI band · log" in status and "2 runs" in status
        labels = leaf_labels(app.query_one(RunsBrowser))
        assert all(labels[run_id].startswith("● ") for run_id in overlaid)
        assert labels[runs["simplified_cot"]].startswith("○ ")


async def test_a_run_gone_since_is_left_out_and_said(state_path: Path, tmp_path: Path):
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    await first_session(db, [runs["none_cot"], runs["detailed_cot"]])
    # The cache is made again with only none_cot (same id: same model, data and type).
    for file in tmp_path.glob("results.duckdb*"):
        file.unlink()
    add_run(db, "none_cot")
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.comparison == [runs["none_cot"]]
        log = "\n".join(app.query_one(LogPanel).lines_recorded)
        assert "1 run overlaid in the last session is no longer in the cache" in log
        assert app.query_one(LayerChart).metric == "sigma1_ratio"


async def test_another_cache_gets_the_view_but_not_the_runs(state_path: Path, tmp_path: Path):
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    await first_session(db, [runs["none_cot"]])
    other = tmp_path / "other" / "results.duckdb"
    fill_cache(other)  # the same runs, in another file
    app = LayerscopeApp(db=other, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.comparison == []
        assert app.query_one(LayerChart).metric == "sigma1_ratio"
    # Quitting there keeps that cache's (empty) selection; the first cache's is not mixed in.
    assert load_state(state_path).chart.runs == []


async def test_a_broken_chart_entry_in_the_state_file_gives_the_defaults(
    state_path: Path, tmp_path: Path
):
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    state_path.write_text(
        json.dumps(
            {
                "chart": {
                    "cache": str(db.resolve()),
                    "runs": [runs["none_cot"], 7, None],
                    "view": {
                        "metric": "no_such",
                        "projections": ["zz"],
                        "band": 3,
                        "log_scale": "yes",
                    },
                }
            }
        )
    )
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.comparison == [runs["none_cot"]]
        chart_pane = app.browse.compare if app.browse else None
        assert chart_pane is not None
        assert chart_pane.view_settings() == {
            "metric": "nuclear_norm",
            "projections": ["q", "k", "v", "o"],
            "band": "none",
            "log_scale": False,
            "depth": "layer",
        }


async def test_the_chart_is_kept_as_it_changes_not_only_at_a_clean_exit(
    state_path: Path, tmp_path: Path
):
    """A dropped SSH session ends the explorer without an exit: the state file must already
    hold the chart as the user left it."""
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    overlaid = [runs["none_cot"], runs["detailed_cot"]]
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, overlaid)
        await pilot.press("s", "l")
        await settle(app, pilot)
        saved = load_state(state_path).chart  # read while the explorer is still running
        assert saved.runs == overlaid
        assert saved.view == app.browse.compare.view_settings()
        assert saved.view != {}


async def test_asking_for_a_model_opens_on_setup_even_with_a_chart_to_restore(
    state_path: Path, tmp_path: Path
):
    db = tmp_path / "results.duckdb"
    runs = fill_cache(db)
    await first_session(db, [runs["detailed_cot"], runs["none_cot"]])
    app = LayerscopeApp(model="tiny", db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert len(app.comparison) == 2  # restored, not shown
        assert app.query_one(TabbedContent).active == "setup"


async def test_a_typed_dataset_is_remembered_without_a_run(state_path: Path, tmp_path: Path):
    from layerscope.app.tui.widgets.setup.dataset_picker import DatasetPicker

    data = tmp_path / "mine" / "answers.jsonl"
    data.parent.mkdir()
    data.write_text('{"instruction": "q", "output": "a"}\n')
    db = tmp_path / "results.duckdb"
    app = LayerscopeApp(db=db, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        picker = app.query_one(DatasetPicker)
        picker.query_one("Input").value = str(data)
        for _ in range(100):  # the path is checked in a worker
            await settle(app, pilot)
            if app.setup_pane is not None and app.setup_pane.picks().dataset_ok:
                break
        assert app.setup_pane is not None and app.setup_pane.picks().dataset == str(data)
        await pilot.press("ctrl+q")
    assert load_state(state_path).last.dataset == str(data)
    assert load_state(state_path).recent_datasets[0] == str(data)
