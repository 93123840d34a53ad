"""The whole explorer flow on the bundled tiny model, with the real runner and engine.

A newcomer's path: the app opens with the tiny model and the math samples preselected; they
check two response types, press r, wait, and see both runs overlaid with the MAD table filled;
then they cancel a run mid-way and start it again, which resumes instead of recomputing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from pathlib import Path

import pytest
from textual.widgets import TabbedContent
from textual.worker import WorkerCancelled

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.models.inspection import inspect_model_path
from layerscope.analysis.models.sources import TINY
from layerscope.analysis.runs.runner import PlannedRun
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.messages import LoadStageReached, RunStarted
from layerscope.app.tui.run_handling import RunHandling
from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.frame.run_progress import RunProgressPanel
from layerscope.app.tui.widgets.setup.model_picker import ModelPicker

SIZE = (100, 32)
MODEL = TINY

pytestmark = pytest.mark.slow


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not inspect_model_path(MODEL).ok:
        pytest.fail(f"the bundled model is missing: {inspect_model_path(MODEL).message}")
    path = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(path))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return path


async def settle(app: LayerscopeApp, pilot, *, keep_compute: bool = False) -> None:
    for _ in range(3):
        for worker in [w for w in app.workers if not (keep_compute and w.group == "compute")]:
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()


async def until_request_ended(app: LayerscopeApp, pilot) -> list[str]:
    """Wait until the request r asked for has ended (or was refused), whether it started at
    once or once a check in progress had settled; the Log's lines then."""
    log: list[str] = []
    for _ in range(100):  # rounds of "every worker done, every message handled"
        await app.workers.wait_for_complete()
        await pilot.pause()
        log = list(app.query_one(LogPanel).lines_recorded)
        ends = ("request done", "run failed after", "run cancelled after", "Cannot run")
        ended = any(end in line for line in log for end in ends)
        if ended and not app.run_controller.computing:
            return log
    raise AssertionError("the request never ended:\n" + "\n".join(log))


async def check_types(app: LayerscopeApp, pilot, wanted: list[str]) -> None:
    """Check exactly these response types, by keyboard: cursor to each, space."""
    await pilot.press("1")
    await settle(app, pilot)
    types = app.query_one("#type-list")
    types.focus()
    await pilot.pause()
    for index in range(types.option_count):
        option = types.get_option_at_index(index)
        if (option.value in wanted) != (option.value in types.selected):
            types.highlighted = index
            await pilot.press("space")
    await pilot.pause()
    assert sorted(types.selected) == sorted(wanted)


async def set_field(app: LayerscopeApp, pilot, selector: str, value: str) -> None:
    field = app.query_one(selector)
    field.focus()
    await pilot.press("ctrl+a", "ctrl+k", *value)


async def test_first_start_preselects_tiny_and_math_and_one_key_gives_charts(db: Path):
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.query_one(ModelPicker).spec == TINY and app.query_one(ModelPicker).ok
        assert app.query_one("#dataset-picker").dataset == "math"
        assert app.query_one("#type-list").selected == [
            "none_cot",
            "simplified_cot",
            "detailed_cot",
        ]
        # Keep it quick: 2 samples per type.
        await set_field(app, pilot, "#setting-samples", "2")
        model_list = app.query_one("#model-list")
        model_list.focus()  # deferred: a focus landing after r would show Setup again
        for _ in range(100):
            if app.focused is model_list:
                break
            await pilot.pause()
        await pilot.press("r")
        log = await until_request_ended(app, pilot)
        for _ in range(50):  # the switch to the chart follows the request's end message
            if app.query_one(TabbedContent).active == "chart":
                break
            await settle(app, pilot)
        assert app.query_one(TabbedContent).active == "chart", "\n".join(log)
        chart = app.query_one(LayerChart)
        for _ in range(100):  # the last read of the curves, after the request ended
            await settle(app, pilot)
            if len({s.label for s in chart.series}) == 3:
                break
        assert {s.label for s in chart.series} == {"none_cot", "simplified_cot", "detailed_cot"}
        assert "(chart could not be drawn" not in chart.as_text(100, 24)


async def test_r_before_the_tabs_are_filled_runs_once_they_are(db: Path, monkeypatch):
    """On a busy machine a key can arrive before the tabs are filled (right after the first
    frame); an r pressed then must not be lost (it was: "Still starting", the flow stayed on
    Setup). The filling is held back here and done by the test once r is handled."""
    fill_tabs = LayerscopeApp._mount_browse_tabs
    requested = asyncio.Event()

    async def held(self: LayerscopeApp) -> None:
        requested.set()

    monkeypatch.setattr(LayerscopeApp, "_mount_browse_tabs", held)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await requested.wait()
        await pilot.press("r")
        assert app.browse is None and not app.run_controller.computing
        await fill_tabs(app)
        # Setup's fields are checked in workers; the run starts once they have answered.
        while not app.run_controller.computing:
            await app.workers.wait_for_complete()
            await pilot.pause()
        log = app.query_one("#log-panel")
        assert "run started: tiny on math" in "\n".join(log.lines_recorded)
        assert app.query_one(TabbedContent).active == "chart"
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert not app.run_controller.computing


async def test_two_types_run_overlaid_with_the_mad_table(db: Path, monkeypatch: pytest.MonkeyPatch):
    plans: list[list[PlannedRun]] = []
    handle_started = RunHandling.on_run_started

    def started(self: LayerscopeApp, message: RunStarted) -> None:
        plans.append(message.planned)
        handle_started(self, message)

    monkeypatch.setattr(RunHandling, "on_run_started", started)
    stages: list[tuple[str, str]] = []  # step, what the loading row said
    handle_stage = RunHandling.on_load_stage_reached

    def reached(self: LayerscopeApp, message: LoadStageReached) -> None:
        handle_stage(self, message)
        row = self.query_one("#load-stage")
        stages.append((message.stage.step, str(row.query_one(".progress-details").render())))

    monkeypatch.setattr(RunHandling, "on_load_stage_reached", reached)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await check_types(app, pilot, ["none_cot", "detailed_cot"])
        await set_field(app, pilot, "#setting-samples", "3")
        await set_field(app, pilot, "#setting-batch", "2")
        await settle(app, pilot)
        # Setup says how many samples run (it said the 80 the two types hold).
        summary = str(app.query_one("#type-summary").render())
        assert "2 types × 3 = 6 samples of 80" in summary
        app.query_one("#type-list").focus()
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        (planned,) = plans
        assert sum(item.total for item in planned) == 6  # what Setup said
        # The real loading steps arrived in order and the progress area showed each.
        steps = [step for step in dict.fromkeys(step for step, _ in stages) if step != "imports"]
        assert steps == ["tokenizer", "weights", "device", "first batch"]
        assert all(re.match(r"\d+\.\d s · \w", text) for _, text in stages)
        log = app.query_one("#log-panel").lines_recorded
        assert any("request done in " in line and "(loading " in line for line in log)
        runs = list(app.runs_by_id.values())
        assert sorted(r.response_type for r in runs) == ["detailed_cot", "none_cot"]
        assert all(r.model == TINY or r.model.endswith("tiny") for r in runs)
        assert all(r.samples_done + r.samples_skipped == 3 for r in runs)
        chart = app.query_one(LayerChart)
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        layers = runs[0].layers
        assert all(len(s.mean) == layers for s in chart.series)
        table = app.query_one(ComparisonTable)
        assert table.row_count == 2 * len(runs[0].projections)
        assert all(row[2] != "-" for row in table.csv_rows[1:])  # MAD over all layers
        panel = app.query_one(RunProgressPanel)
        details = [str(row.query_one(".progress-details").render()) for row in panel.rows.values()]
        assert all(re.match(r"3/3 in \d+\.\d s · done", text) for text in details)


async def test_cancel_mid_run_keeps_samples_and_starting_again_resumes(
    db: Path, monkeypatch: pytest.MonkeyPatch
):
    from layerscope.analysis.runs import runner

    real_execute = runner.execute
    first_batch = threading.Event()
    carry_on = threading.Event()
    first_done: list[int] = []

    def paced(request, db_path=None, cancel=None, **options):
        """The real runner, held after its first stored batch until the test has pressed c."""
        for progress in real_execute(request, db_path=db_path, cancel=cancel, **options):
            yield progress
            if progress.status == "running" and progress.done and not first_batch.is_set():
                first_batch.set()
                carry_on.wait(60)
            if progress.status == "running" and not first_done:
                first_done.append(progress.done)

    monkeypatch.setattr(runner, "execute", paced)
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await check_types(app, pilot, ["simplified_cot"])
        await set_field(app, pilot, "#setting-samples", "6")
        await set_field(app, pilot, "#setting-batch", "1")
        app.query_one("#type-list").focus()
        await pilot.press("r")
        for _ in range(600):
            if first_batch.is_set():
                break
            await settle(app, pilot, keep_compute=True)
        assert first_batch.is_set()
        await pilot.press("c")
        carry_on.set()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        (run,) = app.runs_by_id.values()
        kept = run.samples_done + run.samples_skipped
        assert run.status == "cancelled" and 1 <= kept < 6
        # Starting the same run again computes only what is missing, as Setup says.
        first_done.clear()
        await pilot.press("1")
        summary = app.query_one("#type-summary")
        expected = f"(1 type × 6 = 6 samples of 40; {kept} cached)"
        for _ in range(500):  # until the plan made after the run has answered
            if expected in str(summary.render()):
                break
            await settle(app, pilot)
        assert expected in str(summary.render())
        app.query_one("#type-list").focus()
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        (run,) = app.runs_by_id.values()
        assert run.status == "complete"
        assert first_done and first_done[0] == kept  # resumed where it stopped
        stored = ResultsCache(db).samples(run.id, sort_by="index", descending=False)
        assert [row.index for row in stored] == sorted({row.index for row in stored})
        assert len(stored) + run.samples_skipped == 6
