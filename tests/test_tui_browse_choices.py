"""The browsing tabs say what they show and let the user choose it where they are.

The Runs tab shows the highlighted run's id and settings; the Samples and Cosines tabs step
through the runs overlaid in the chart (n, N) and name the one they show; the Samples tab says
over what its statistic columns are averaged. Driven in-process over synthetic runs (no torch).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tui_browse import compare, settle
from textual.widgets import Static

from layerscope.analysis.cache import ResultsCache
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.screens.help import HelpScreen
from layerscope.app.tui.widgets.cosines.cosine_heatmap import CosineHeatmap
from layerscope.app.tui.widgets.cosines.cosine_view import CosinePane
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
from layerscope.app.tui.widgets.samples.samples_view import SamplesPane

SIZE = (80, 24)


def shown(app: LayerscopeApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def test_runs_tab_shows_the_highlighted_runs_id_and_settings(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        tree = app.query_one(RunsBrowser)
        detail = shown(app, "#run-detail")
        first = tree.current_run()
        assert first is not None
        assert f"id {first}" in detail  # the whole id, to copy
        assert "max length 512, modules attn" in detail
        # Moving the cursor onto the instruct run shows its own line.
        while tree.current_run() != filled["detailed_cot/instruct"]:
            await pilot.press("down")
        await pilot.pause()
        detail = shown(app, "#run-detail")
        assert f"id {filled['detailed_cot/instruct']}" in detail
        assert "detailed_cot (instruct) · cancelled" in detail
        assert first not in detail
        # On a model or dataset node there is no run to describe.
        tree.cursor_line = 0
        await pilot.pause()
        assert "Move the cursor onto a run" in shown(app, "#run-detail")


async def test_runs_detail_follows_a_rescan_of_the_highlighted_run(cache_path: Path):
    from tui_synthetic import add_run

    partial = add_run(cache_path, "none_cot", samples=12, stored=4, status="cancelled")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        assert "cancelled" in shown(app, "#run-detail")
        add_run(cache_path, "none_cot", samples=12, stored=12, status="complete")
        app.scan_cache()
        await settle(app, pilot)
        assert f"id {partial}" in shown(app, "#run-detail")
        assert "(base) · complete" in shown(app, "#run-detail")


async def test_samples_tab_steps_through_the_overlaid_runs(filled: dict[str, str]):
    overlaid = [filled["none_cot"], filled["detailed_cot"], filled["none_cot_irrelevant"]]
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, overlaid)
        await pilot.press("5")
        await settle(app, pilot)
        pane = app.query_one(SamplesPane)
        shown_first = pane.run_id
        assert shown_first in overlaid
        rows_first = [(row.index, row.loss) for row in pane.rows]
        position = overlaid.index(shown_first)
        await pilot.press("n")
        await settle(app, pilot)
        second = overlaid[(position + 1) % 3]
        assert pane.run_id == second
        # Other rows: detailed_cot and none_cot have different losses and lengths.
        assert [(row.index, row.loss) for row in pane.rows] != rows_first
        expected = ResultsCache(app.db_path).samples(second, sort_by="loss")
        assert [row.loss for row in pane.rows] == [row.loss for row in expected]
        status = shown(app, "#samples-status")
        assert f"/ {app.runs_by_id[second].response_type} (base)" in status
        assert f"run {(position + 1) % 3 + 1}/3 (n: next)" in status
        # N goes back; the Cosines tab follows the run chosen here.
        await pilot.press("N")
        await settle(app, pilot)
        assert pane.run_id == shown_first
        await pilot.press("n")
        await settle(app, pilot)
        await pilot.press("4")
        await settle(app, pilot)
        assert app.query_one(CosinePane).run_id == second


async def test_cosines_tab_steps_through_the_overlaid_runs(filled: dict[str, str]):
    overlaid = [filled["none_cot"], filled["detailed_cot"]]
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, overlaid)
        await pilot.press("4")
        await settle(app, pilot)
        pane = app.query_one(CosinePane)
        heatmap = app.query_one(CosineHeatmap)
        cache = ResultsCache(app.db_path)
        first = pane.run_id
        assert first in overlaid and heatmap.matrix == cache.layer_cosines(first, "q")
        other = overlaid[1 - overlaid.index(first)]
        await pilot.press("n")
        await settle(app, pilot)
        assert pane.run_id == other
        assert heatmap.matrix == cache.layer_cosines(other, "q") != cache.layer_cosines(first, "q")
        status = shown(app, "#cosine-status")
        assert f"/ {app.runs_by_id[other].response_type} (base)" in status
        assert f"run {overlaid.index(other) + 1}/2" in status and "projection q" in status


async def test_with_nothing_overlaid_n_says_how_to_overlay(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await settle(app, pilot)
        before = app.query_one(SamplesPane).run_id  # the run under the Runs tab's cursor
        await pilot.press("n")
        await pilot.pause()
        assert any("No runs overlaid" in n.message for n in app._notifications)
        assert app.query_one(SamplesPane).run_id == before
        assert "not overlaid" in shown(app, "#samples-status")


async def test_help_lists_the_run_choice_of_samples_and_cosines(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        sections = dict(app.screen.sections)
        for area in ("Samples tab", "Cosines tab"):
            keys = {b.key: b for b in sections[area]}
            assert {"n", "N"} <= set(keys)
            assert "next of the runs overlaid" in (keys["n"].tooltip or "")


async def test_samples_caption_says_over_what_statistics_are_averaged(filled: dict[str, str]):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await compare(app, pilot, [filled["none_cot"]])
        await pilot.press("5")
        await settle(app, pilot)
        caption = shown(app, "#samples-caption")
        assert "statistics: mean over layers 0-5, q k v o" in caption
        assert "sorted by loss ↓ · 11 shown" in caption
        # It fits at 80 columns: the screen shows it whole.
        assert len(caption) <= SIZE[0] - 2


async def open_export(app: LayerscopeApp, pilot, filled: dict[str, str]):
    from layerscope.app.tui.screens.export_dialog import ExportDialog

    await compare(app, pilot, [filled["none_cot"], filled["detailed_cot"]])
    await pilot.press("e")
    await pilot.pause()
    assert isinstance(app.screen, ExportDialog)
    return app.screen


async def submit(pilot, dialog, folder: str) -> str:
    """Type `folder` into the export dialog, press enter; what the dialog then says."""
    dialog.query_one("#export-folder").value = folder
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()  # the write runs in a thread worker
    await pilot.pause()
    if pilot.app.screen is not dialog:  # closed: exported
        return ""
    problem = dialog.query_one("#export-problem", Static)
    if not problem.display:
        return ""
    said = str(problem.render())
    assert said.startswith("✗ ")  # marked, not only coloured
    return said.removeprefix("✗ ")


async def test_export_into_no_folder_or_a_file_says_why_and_stays_open(
    filled: dict[str, str], tmp_path: Path
):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        dialog = await open_export(app, pilot, filled)
        assert await submit(pilot, dialog, "  ") == "choose a folder"
        assert app.screen is dialog
        said = await submit(pilot, dialog, str(a_file / "out"))
        assert said == f"{a_file} is a file, not a folder"
        assert app.screen is dialog and a_file.read_text() == "mine"
        # Corrected in place: written, and the dialog closes.
        assert await submit(pilot, dialog, str(tmp_path / "out")) == ""
        assert app.screen is not dialog
    from layerscope.app.figures import have_matplotlib

    figures = ["figure-nuclear_norm.pdf", "figure-nuclear_norm.png"] if have_matplotlib() else []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "chart-nuclear_norm.txt",
        "comparison-nuclear_norm.csv",
        *figures,
        "table-nuclear_norm.md",
        "table-nuclear_norm.tex",
    ]


async def test_export_that_cannot_write_a_file_writes_none_and_says_which(
    filled: dict[str, str], tmp_path: Path
):
    out = tmp_path / "out"
    (out / "comparison-nuclear_norm.csv").mkdir(parents=True)  # in the way of the second file
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        dialog = await open_export(app, pilot, filled)
        said = await submit(pilot, dialog, str(out))
        assert said.startswith("not exported: ")
        assert f"{out / 'comparison-nuclear_norm.csv'} is a folder" in said
        assert app.screen is dialog
    # Checked before writing: not even the chart's text file was written.
    assert [p.name for p in out.iterdir()] == ["comparison-nuclear_norm.csv"]


async def test_export_writes_off_the_ui_thread_and_says_so_meanwhile(
    filled: dict[str, str], tmp_path: Path, monkeypatch
):
    """A slow write (a study-sized cache, a slow disk) never holds the keys: the dialog says
    it is writing, and closes when the worker thread has written."""
    import threading

    import layerscope.app.tui.export as export

    release, writers = threading.Event(), []
    real_write = export.write_exports

    def held_write(*args, **kwargs):
        writers.append(threading.current_thread())
        assert release.wait(timeout=60)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(export, "write_exports", held_write)
    out = tmp_path / "out"
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        dialog = await open_export(app, pilot, filled)
        dialog.query_one("#export-folder").value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog  # the UI thread went on while the write waits
        assert str(dialog.query_one("#export-status", Static).render()) == f"writing into {out}…"
        assert dialog.query_one("#export-folder").disabled
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is not dialog
    assert writers and writers[0] is not threading.main_thread()
    assert (out / "chart-nuclear_norm.txt").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
async def test_export_into_an_unwritable_folder_says_so(filled: dict[str, str], tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        app = LayerscopeApp(poll_seconds=0)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            dialog = await open_export(app, pilot, filled)
            assert await submit(pilot, dialog, str(locked)) == f"folder {locked} is not writable"
            said = await submit(pilot, dialog, str(locked / "new"))
            assert said == f"cannot create folder {locked / 'new'}: {locked} is not writable"
            assert app.screen is dialog
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


async def test_the_runs_tab_export_carries_each_runs_settings(
    filled: dict[str, str], tmp_path: Path
):
    import csv

    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        assert await submit(pilot, app.screen, str(tmp_path / "out")) == ""
    with open(tmp_path / "out" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["id"] for row in rows} == set(filled.values())
    assert all("max length 512, modules attn" in row["settings"] for row in rows)
