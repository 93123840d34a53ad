"""Snapshot tests of the explorer's main screens at 100x32, over fixed synthetic runs.

Everything on these screens is deterministic: run ids are hashes of fixed names, the numbers
come from tui_synthetic's formulas, and no screen shown here carries a time or a duration (the
Runs tab's computing time is fixed by the fixture).
Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the report before committing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from textual.widgets import DataTable
from textual.worker import WorkerCancelled
from tui_synthetic import fill_cache

from layerscope.app import labels
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser

SIZE = (100, 32)


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    # The Runs tab's detail line says how long a run computed: a fixed time, not the fill's.
    monkeypatch.setattr(labels, "computing_seconds", lambda run: 4.2)
    return fill_cache(db)


async def settle(pilot) -> None:
    """Until nothing is left to do: no worker running (a read may start another, e.g. a
    coalesced rescan), no animation, and no DataTable with column sizing pending (it sizes its
    auto-width columns when it next goes idle, after the rows landed; a screenshot before that
    catches the widths of the previous content). Conditions, not times: a busy machine only
    waits longer."""
    for _ in range(1000):
        with contextlib.suppress(WorkerCancelled):
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        tables = list(pilot.app.screen.query(DataTable))
        sizing = any(t._require_update_dimensions or t._updated_cells for t in tables)
        working = any(worker.is_running for worker in pilot.app.workers)
        if not sizing and not working:
            break
    await pilot.pause()


def go_to(*run_ids: str):
    """run_before: mark these runs in the Runs tab, open the chart."""

    async def before(pilot) -> None:
        app = pilot.app
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        tree = app.query_one(RunsBrowser)
        for run_id in run_ids:
            line = next(
                line
                for line in range(tree.last_line + 1)
                if (node := tree.get_node_at_line(line)) is not None and node.data == run_id
            )
            tree.cursor_line = line
            await pilot.press("space")
        await pilot.press("enter")
        await settle(pilot)

    return before


def test_setup_first_start(snap_compare, runs: dict[str, str]):
    """What a newcomer sees: the built-in model and the bundled math samples preselected."""

    async def before(pilot) -> None:
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_runs_browser(snap_compare, runs: dict[str, str]):
    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("space")  # mark the first run

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_chart_fast_vs_slow_thinking(snap_compare, runs: dict[str, str]):
    before = go_to(runs["none_cot"], runs["simplified_cot"], runs["detailed_cot"])
    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_chart_correct_vs_irrelevant_one_projection_with_band(snap_compare, runs: dict[str, str]):
    select = go_to(runs["none_cot"], runs["none_cot_irrelevant"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("q", "k", "v", "b")  # only o, with its 95% CI band
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_samples_table_sorted_by_loss(snap_compare, runs: dict[str, str]):
    select = go_to(runs["detailed_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("5")
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_sample_detail(snap_compare, runs: dict[str, str]):
    select = go_to(runs["none_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_cosine_heatmap(snap_compare, runs: dict[str, str]):
    select = go_to(runs["none_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("down", "right", "right")

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_help_screen(snap_compare, runs: dict[str, str]):
    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")  # not Setup: its model list depends on the machine
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SIZE, run_before=before)


def test_chart_light_theme_at_80x24(snap_compare, runs: dict[str, str]):
    select = go_to(runs["none_cot"], runs["detailed_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("t")
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=(80, 24), run_before=before)


# --- without colour at 80x24: every series and every box state told apart by glyph ----------

SMALL = (80, 24)


@pytest.fixture
def mono_runs(runs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The synthetic runs, with NO_COLOR set before the app starts (Textual reads it then)."""
    monkeypatch.setenv("NO_COLOR", "1")
    return runs


def test_no_color_setup_at_80x24(snap_compare, mono_runs: dict[str, str]):
    """Checked boxes show ✓, unchecked ones a blank; the selected mode ●, the other ○."""

    async def before(pilot) -> None:
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SMALL, run_before=before)


def test_no_color_chart_of_three_runs_at_80x24(snap_compare, mono_runs: dict[str, str]):
    """Three runs, three markers (⠤⠤, ••, xx) named in the legend; every layer a tick."""
    before = go_to(mono_runs["none_cot"], mono_runs["simplified_cot"], mono_runs["detailed_cot"])
    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SMALL, run_before=before)


def test_no_color_sample_detail_at_80x24(snap_compare, mono_runs: dict[str, str]):
    """The run's mean in dots (••), the sample in braille (⠤⠤), named above the figure."""
    select = go_to(mono_runs["none_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SMALL, run_before=before)


def test_no_color_samples_marked_and_their_scatter_at_80x24(
    snap_compare, mono_runs: dict[str, str]
):
    """The top 3 samples marked (● in the first column, ●● in the scatter's legend), drawn
    against response length with the other samples' •• points."""
    select = go_to(mono_runs["none_cot"])

    async def before(pilot) -> None:
        await select(pilot)
        await pilot.press("5")
        await settle(pilot)
        pilot.app.query_one("#samples-table", DataTable).move_cursor(row=2)
        await pilot.press("M", "p")
        await settle(pilot)
        await pilot.press("p")  # against loss: the synthetic lengths are all alike
        await settle(pilot)

    assert snap_compare(LayerscopeApp(poll_seconds=0), terminal_size=SMALL, run_before=before)
