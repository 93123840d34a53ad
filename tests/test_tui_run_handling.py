"""How the explorer drives a computation: progress, live charts, cancel and resume, errors.

The runner is replaced by a scripted one (same contract: `plan`, `execute` yielding RunProgress,
honouring the cancel Event) that writes synthetic batches through the real cache, and waits on
a gate between batches so that a test can act mid-run deterministically, without sleeping.
The real tiny model goes through the same code in test_tui_flow.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from significance_children import in_thread
from textual.widgets import ProgressBar, TabbedContent
from textual.worker import WorkerCancelled
from tui_synthetic import begin, run_id_for, write

from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.runs.runner import PlannedRun as Planned
from layerscope.analysis.runs.runner import RunProgress as Progress
from layerscope.analysis.runs.runner import RunRequest as Request
from layerscope.app.tui.app import LayerscopeApp
from layerscope.app.tui.run_handling import RunHandling
from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.frame.progress_row import ProgressRow, stage_details
from layerscope.app.tui.widgets.frame.run_progress import RunProgressPanel
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser

SIZE = (100, 32)
BATCH = 4
TOTAL = 12
WEIGHTS = 3  # weight tensors the scripted model loads


@dataclass
class Script:
    """What the scripted runner does; the test opens `gate` once per batch it allows."""

    gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    fail_after: int | None = None  # raise after this many batches
    failure: Exception = field(default_factory=lambda: RuntimeError("CUDA out of memory."))
    requests: list[Any] = field(default_factory=list)
    batches_written: int = 0


def scripted_runner(script: Script) -> types.ModuleType:
    module = types.ModuleType("layerscope.analysis.runs.runner")

    def plan(request: Request, db_path: Path | None = None) -> list[Planned]:
        cache = ResultsCache(db_path)
        planned = []
        for response_type in request.types or []:
            run_id = run_id_for(request.model, "math", response_type, request.settings.mode)
            planned.append(
                Planned(run_id, "math", response_type, TOTAL, len(cache.done_indices(run_id)))
            )
        return planned

    def execute(
        request: Request, db_path: Path | None = None, cancel=None, on_plan=None, on_stage=None
    ):
        script.requests.append(request)
        tell = on_stage or (lambda _stage: None)
        planned = plan(request, db_path)
        loads = any(item.missing for item in planned)
        if loads:  # the real runner's loading steps, in its order
            tell(LoadStage("imports", "importing torch and transformers"))
        if on_plan is not None:
            on_plan(planned)
        if loads:
            tell(LoadStage("tokenizer", "loading the tokenizer"))
            for done in range(WEIGHTS + 1):
                tell(LoadStage("weights", "loading weights", done, WEIGHTS))
            tell(LoadStage("device", "moving the model to cpu"))
            tell(LoadStage("first batch", "computing the first batch"))
        cache = ResultsCache(db_path)
        for response_type in request.types or []:
            run_id = begin(
                db_path,
                response_type,
                model=request.model,
                samples=TOTAL,
                mode=request.settings.mode,
            )
            missing = [i for i in range(TOTAL) if i not in cache.done_indices(run_id)]
            done = TOTAL - len(missing)
            for start in range(0, len(missing), BATCH):
                if cancel is not None and cancel.is_set():
                    cache.finish_run(run_id, "cancelled")
                    yield Progress(
                        run_id, "math", response_type, done, TOTAL, 0, None, None, "cancelled"
                    )
                    return
                if not script.gate.acquire(timeout=60):
                    return  # the test ended without opening the gate
                if script.fail_after is not None and script.batches_written >= script.fail_after:
                    cache.finish_run(run_id, "failed", str(script.failure))
                    raise script.failure
                indices = missing[start : start + BATCH]
                write(db_path, run_id, response_type, indices, TOTAL, request.settings.mode)
                script.batches_written += 1
                done += len(indices)
                yield Progress(
                    run_id,
                    "math",
                    response_type,
                    done,
                    TOTAL,
                    8.0,
                    (TOTAL - done) / 8,
                    1.5,
                    "running",
                )
            cache.finish_run(run_id, "complete")
            yield Progress(run_id, "math", response_type, TOTAL, TOTAL, 8.0, 0, 1.5, "complete")

    module.RunRequest = Request  # type: ignore[attr-defined]
    module.RunProgress = Progress  # type: ignore[attr-defined]
    module.PlannedRun = Planned  # type: ignore[attr-defined]
    module.plan = plan  # type: ignore[attr-defined]
    module.execute = execute  # type: ignore[attr-defined]
    return module


@pytest.fixture
def model(tmp_path: Path) -> str:
    """A model folder whose files say: a 6-layer causal LM with a chat template."""
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 6}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    return str(folder)


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Script:
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    script = Script()
    monkeypatch.setitem(sys.modules, "layerscope.analysis.runs.runner", scripted_runner(script))
    return script


async def settle(app: LayerscopeApp, pilot, *, keep_compute: bool = False) -> None:
    """Wait for the UI's short workers (not a compute worker that waits on the gate)."""
    for _ in range(3):
        workers = [w for w in app.workers if not (keep_compute and w.group == "compute")]
        for worker in workers:
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()


async def until(app: LayerscopeApp, pilot, condition, what: str) -> None:
    """Process messages until `condition()` holds (bounded, no sleeping)."""
    for _ in range(400):
        if condition():
            return
        await pilot.pause()
        await settle(app, pilot, keep_compute=True)
    raise AssertionError(f"timed out waiting for {what}")


async def start(app: LayerscopeApp, pilot, types_wanted: list[str]) -> None:
    """On the Setup tab, check exactly these response types and press r."""
    await settle(app, pilot)
    picker = app.query_one("#type-list")
    picker.deselect_all()
    for response_type in types_wanted:
        picker.select(response_type)
    await pilot.pause()
    await pilot.press("r")
    await pilot.pause()


def progress_rows(app: LayerscopeApp) -> dict[str, str]:
    panel = app.query_one(RunProgressPanel)
    return {
        row.title: str(row.query_one(".progress-details").render()) for row in panel.rows.values()
    }


async def test_a_run_shows_progress_and_updates_the_chart_live(script: Script, model: str):
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["none_cot", "detailed_cot"])
        assert app.query_one(TabbedContent).active == "chart"
        # Planned runs show at once, waiting (a real model would be loading now).
        await until(app, pilot, lambda: len(progress_rows(app)) == 2, "planned rows")
        assert set(progress_rows(app).values()) == {"waiting…"}
        script.gate.release()  # first batch of none_cot
        await until(
            app, pilot, lambda: progress_rows(app)["math/none_cot"] != "waiting…", "progress"
        )
        first = progress_rows(app)["math/none_cot"]
        assert first.startswith("4/12 in ") and " s · 8.0/s · ETA 1s" in first  # elapsed
        # The chart already shows the first batch, while the run goes on.
        chart = app.query_one(LayerChart)
        await until(app, pilot, lambda: chart.series, "a live curve")
        assert {s.label for s in chart.series} == {"none_cot"}
        # Keys are answered while the worker waits mid-run.
        await pilot.press("s")
        await until(app, pilot, lambda: chart.metric == "sigma1_ratio" and chart.series, "redraw")
        for _ in range(10):
            script.gate.release()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        rows = progress_rows(app)
        # How each run ended and how long it took come first (80 columns cut the end).
        assert all(
            re.match(r"12/12 in \d+\.\d s · done · loss", rows[name])
            for name in ("math/none_cot", "math/detailed_cot")
        )
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        assert app.query_one(ComparisonTable).row_count == 8
        statuses = {run.response_type: run.status for run in app.runs_by_id.values()}
        assert statuses == {"none_cot": "complete", "detailed_cot": "complete"}
        # The Runs tab marks the overlaid runs, including the one that started later.
        browser = app.query_one(RunsBrowser)
        assert browser.selected == app.comparison and len(app.comparison) == 2
        marked = [
            str(node.label)
            for line in range(browser.last_line + 1)
            if (node := browser.get_node_at_line(line)) is not None and node.data
        ]
        assert all(label.startswith("●") for label in marked)


async def test_a_batch_reads_the_chart_once_and_tests_only_the_pair_it_changed(
    script: Script, model: str, monkeypatch: pytest.MonkeyPatch
):
    """A batch that lands redraws the live chart from one read (not one for the progress and
    one for the runs' new counts), and the pair is tested once per state of what its runs
    stored: a batch of the second run tests it again, a redraw of the same counts never."""
    from layerscope.analysis.results import compare as analysis_compare
    from layerscope.analysis.results import pair_significance

    reads = 0
    tested: list[tuple[int, int]] = []  # the two runs' stored samples, at each pair's tests
    compare_runs, pair_tests = analysis_compare.compare_runs, pair_significance.pair_tests

    def counted_reads(*args, **kwargs):
        nonlocal reads
        reads += 1
        return compare_runs(*args, **kwargs)

    def counted_tests(cache, info_a, info_b, *args, **kwargs):
        tested.append((info_a.samples_done, info_b.samples_done))
        return pair_tests(cache, info_a, info_b, *args, **kwargs)

    monkeypatch.setattr(analysis_compare, "compare_runs", counted_reads)
    monkeypatch.setattr(pair_significance, "pair_tests", counted_tests)
    # the tests in a thread of this process (the explorer's own process is out of reach)
    app = LayerscopeApp(model=model, poll_seconds=0, significance_executor=in_thread)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["none_cot", "detailed_cot"])
        await until(app, pilot, lambda: len(progress_rows(app)) == 2, "planned rows")
        chart = app.query_one(LayerChart)
        reads_per_batch = []
        for batch, (name, done) in enumerate(
            [("none_cot", 4), ("none_cot", 8), ("none_cot", 12), ("detailed_cot", 4)]
        ):
            reads = 0
            script.gate.release()
            await until(
                app,
                pilot,
                lambda: progress_rows(app)[f"math/{name}"].startswith(f"{done}/12"),  # noqa: B023
                f"batch {batch + 1}",
            )
            await settle(app, pilot, keep_compute=True)
            await until(app, pilot, lambda: not chart.testing, "the tests")
            reads_per_batch.append(reads)
        # the third batch ends none_cot (its status changes too): not counted
        assert [reads_per_batch[i] for i in (0, 1, 3)] == [1, 1, 1]
        assert len(tested) == 1 and tested[0][1] > 0
        assert {s.label for s in chart.series} == {"none_cot", "detailed_cot"}
        for _ in range(10):
            script.gate.release()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        runs = [app.runs_by_id[run_id] for run_id in app.comparison]
        assert [run.status for run in runs] == ["complete", "complete"] and not chart.testing
        # a state of the two runs is tested once at most (batches that land while a test
        # runs are tested together), and the last is what the marks show
        assert len(tested) == len(set(tested)) <= 3
        assert tested[-1] == (runs[0].samples_done, runs[1].samples_done)


async def test_cancel_keeps_finished_samples_and_running_again_resumes(script: Script, model: str):
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["simplified_cot"])
        script.gate.release()
        await until(
            app,
            pilot,
            lambda: progress_rows(app).get("math/simplified_cot", "waiting…") != "waiting…",
            "first batch",
        )
        await pilot.press("c")
        script.gate.release()  # let the worker reach its next cancel check
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        run = next(iter(app.runs_by_id.values()))
        assert run.status == "cancelled"
        kept = run.samples_done + run.samples_skipped
        assert 4 <= kept < TOTAL
        assert "cancelled" in progress_rows(app)["math/simplified_cot"]
        log = "\n".join(app.query_one(LogPanel).lines_recorded)
        assert "cancelled" in log
        # Setup shows the run as partial; r resumes and computes only the missing samples.
        await pilot.press("1")
        await settle(app, pilot)
        prompt = str(app.query_one("#type-list").get_option("type-simplified_cot").prompt)
        assert f"partial {kept}/{TOTAL}" in prompt
        written_before = script.batches_written
        for _ in range(10):
            script.gate.release()
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        run = next(iter(app.runs_by_id.values()))
        assert run.status == "complete" and run.samples_done + run.samples_skipped == TOTAL
        assert script.batches_written - written_before == -(-(TOTAL - kept) // BATCH)
        await pilot.press("1")
        await settle(app, pilot)
        prompt = str(app.query_one("#type-list").get_option("type-simplified_cot").prompt)
        assert "cached" in prompt and "partial" not in prompt


async def test_a_failing_run_is_reported_and_the_app_keeps_working(script: Script, model: str):
    script.fail_after = 1
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["none_cot"])
        script.gate.release()
        script.gate.release()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        log = "\n".join(app.query_one(LogPanel).lines_recorded)
        assert "Run failed: CUDA out of memory." in log
        assert any("CUDA out of memory." in str(n.message) for n in app._notifications)
        run = next(iter(app.runs_by_id.values()))
        assert run.status == "failed" and run.samples_done == 4
        # Still alive and usable: browse, and start again.
        await pilot.press("2")
        await settle(app, pilot)
        assert app.query_one(TabbedContent).active == "runs"
        assert not app.run_controller.computing


async def test_nothing_runs_without_a_checked_type_and_the_reason_is_shown(
    script: Script, model: str
):
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, [])
        assert not script.requests
        assert app.query_one(TabbedContent).active == "setup"
        log = "\n".join(app.query_one(LogPanel).lines_recorded)
        assert "check at least one response type" in log


async def test_the_request_carries_the_settings_and_is_remembered(
    script: Script, model: str, tmp_path: Path
):
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one("#setting-samples").value = "6"
        app.query_one("#setting-seed").value = "7"
        app.query_one("#setting-max-length").value = "256"
        app.query_one("#setting-batch").value = "2"
        for _ in range(10):
            script.gate.release()
        await start(app, pilot, ["detailed_cot"])
        await app.workers.wait_for_complete()
        await settle(app, pilot)
    request = script.requests[0]
    assert request.model == model and request.types == ["detailed_cot"]
    assert Path(request.dataset).name == "math"
    assert (request.limit, request.sample_seed) == (6, 7)
    assert request.settings.max_length == 256 and request.settings.batch_size == 2
    # The next start preselects what was used.
    again = LayerscopeApp(poll_seconds=0)
    async with again.run_test(size=SIZE) as pilot:
        await settle(again, pilot)
        assert again.query_one("#type-list").selected == ["detailed_cot"]
        assert again.query_one("#setting-samples").value == "6"
        assert again.query_one("#setting-max-length").value == "256"
    assert (tmp_path / "state.json").is_file()


def test_progress_details_read_at_a_glance():
    from layerscope.app.tui.widgets.frame.progress_row import format_duration, progress_details

    running = Progress("x", "math", "none_cot", 12, 40, 3.14, 9.2, 2.3456, "running")
    assert progress_details(running) == "12/40 · 3.1/s · ETA 9s · loss 2.346"
    assert format_duration(185) == "3m05s" and format_duration(7300) == "2h01m"
    assert format_duration(None) == "?"
    done = Progress("x", "math", "none_cot", 40, 40, 3.0, 0, 2.0, "complete")
    assert progress_details(done).startswith("40/40 · done")
    done.skipped, done.failed = 2, 1  # type: ignore[attr-defined]
    assert progress_details(done) == "40/40 · done · loss 2.000 · 2 skipped · 1 failed"
    assert progress_details(done, 9.81).startswith("40/40 in 9.8 s · done")
    assert isinstance(ProgressRow("t"), ProgressRow)


async def test_the_eta_runs_down_between_batches(monkeypatch):
    """A batch can take long: the ETA stood at its last value ("ETA 10s" at 12.6 s and at
    21.6 s) until the next batch landed. It runs down with the clock, to 0, until then."""
    from textual.app import App
    from textual.widgets import Static

    from layerscope.app.tui.widgets.frame import progress_row

    clock = [1000.0]
    monkeypatch.setattr(progress_row, "clock", lambda: clock[0])

    class OneRow(App[None]):
        def compose(self):
            yield ProgressRow("math/none_cot", id="row")

    app = OneRow()
    async with app.run_test() as pilot:
        row = app.query_one(ProgressRow)
        details = row.query_one(".progress-details", Static)
        row.show(Progress("x", "math", "none_cot", 12, 40, 3.14, 10.0, 2.0, "running"))
        await pilot.pause()
        assert "ETA 10s" in str(details.render())
        clock[0] += 4.0
        row.tick()
        await pilot.pause()
        assert "ETA 6s" in str(details.render())
        clock[0] += 30.0  # overdue: not negative
        row.tick()
        await pilot.pause()
        assert "ETA 0s" in str(details.render())
        row.show(Progress("x", "math", "none_cot", 16, 40, 3.0, 8.0, 2.0, "running"))
        await pilot.pause()
        assert "ETA 8s" in str(details.render())  # the next batch measures it again


async def type_into(app: LayerscopeApp, pilot, selector: str, text: str) -> None:
    """Replace a path field's text as pasting does, then wait for its check."""
    path_field = app.query_one(selector)
    path_field.focus()
    await pilot.press("ctrl+a", "ctrl+k")
    if text:
        path_field.insert_text_at_cursor(text)
    await settle(app, pilot)


async def press_run(app: LayerscopeApp, pilot) -> None:
    """Press r from the type list (in a path field, r would be typed)."""
    app.query_one("#type-list").focus()
    await pilot.press("r")
    await settle(app, pilot)


def refused_with(app: LayerscopeApp, script: Script, reason: str) -> bool:
    """No run started, the user was told `reason`, and Setup is shown to fix it."""
    log = "\n".join(app.query_one(LogPanel).lines_recorded)
    told = any(reason in str(n.message) for n in app._notifications)
    return (
        not script.requests
        and not app.run_controller.computing
        and not [w for w in app.workers if w.group == "compute"]
        and "run started" not in log
        and f"Cannot run: {reason}" in log
        and told
        and app.query_one(TabbedContent).active == "setup"
    )


async def test_r_refuses_a_model_field_that_shows_no_usable_model(
    script: Script, model: str, tmp_path: Path
):
    """It ran the last usable model while the field showed a wrong one (issue 12)."""
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        nowhere = str(tmp_path / "nowhere")
        await type_into(app, pilot, "#model-path", nowhere)
        await press_run(app, pilot)
        assert refused_with(app, script, f"model '{nowhere}': no such folder")


async def test_r_refuses_a_dataset_field_that_shows_no_readable_dataset(
    script: Script, model: str, tmp_path: Path
):
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        missing = str(tmp_path / "data" / "cot_500")
        await type_into(app, pilot, "#dataset-path", missing)
        assert "no such file or folder" in str(app.query_one("#dataset-check").render())
        await press_run(app, pilot)
        assert refused_with(app, script, f"dataset field: {missing}: no such file or folder")
        await type_into(app, pilot, "#dataset-path", "")
        line = str(app.query_one("#dataset-check").render())
        assert "no dataset chosen" in line and "cot_500" not in line
        await press_run(app, pilot)
        assert refused_with(app, script, "no dataset chosen")


async def test_an_emptied_model_field_says_nothing_is_chosen_and_r_refuses(
    script: Script, model: str
):
    """A stale `✗ model 'Z'` stayed under the emptied field and r ran the previous model."""
    app = LayerscopeApp(model=model, poll_seconds=0)  # a folder: shown in the path field
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await type_into(app, pilot, "#model-path", "./Z")  # a folder (a bare name may be a hub id)
        assert "Z" in str(app.query_one("#model-check").render())
        await type_into(app, pilot, "#model-path", "")
        line = str(app.query_one("#model-check").render())
        assert "no model chosen" in line and "Z" not in line
        await press_run(app, pilot)
        assert refused_with(app, script, "no model chosen")
        # Choosing from the list again makes r run what the list shows.
        app.query_one("#model-list").highlighted = 0  # the built-in tiny model
        await settle(app, pilot)
        assert str(app.query_one("#model-check").render()).startswith("✓")
        for _ in range(10):
            script.gate.release()
        await press_run(app, pilot)
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert [request.model for request in script.requests] == ["tiny"]


async def test_loading_stages_show_in_order_in_the_progress_area_and_the_log(
    script: Script, model: str, monkeypatch: pytest.MonkeyPatch
):
    """Between r and the first batch there were only pulsing `waiting…` bars (issue 12)."""
    shown: list[tuple[str, str, float | None]] = []  # step, loading row text, bar total
    handle_stage = RunHandling.on_load_stage_reached

    def reached(self: LayerscopeApp, message: Any) -> None:
        handle_stage(self, message)
        row = self.query_one("#load-stage", ProgressRow)
        assert row.display and self.query_one(RunProgressPanel).display
        text = str(row.query_one(".progress-details").render())
        shown.append((message.stage.step, text, row.query_one(ProgressBar).total))

    monkeypatch.setattr(RunHandling, "on_load_stage_reached", reached)
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["none_cot"])
        await until(app, pilot, lambda: shown and shown[-1][0] == "first batch", "the stages")
        steps = list(dict.fromkeys(step for step, _, _ in shown))
        assert steps == ["imports", "tokenizer", "weights", "device", "first batch"]
        assert re.fullmatch(r"\d+\.\d s · importing torch and transformers", shown[0][1])
        weights = [(text, total) for step, text, total in shown if step == "weights"]
        assert weights[-1][0].endswith(f" s · loading weights {WEIGHTS}/{WEIGHTS}")
        assert weights[-1][1] == WEIGHTS  # a determinate bar, not a pulse
        # Waiting for the first batch, the loading row says so above the run's row.
        loading_row = app.query_one("#load-stage", ProgressRow)
        assert loading_row.display
        assert str(loading_row.query_one(".progress-details").render()).endswith(
            " s · computing the first batch"
        )
        for _ in range(10):
            script.gate.release()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert not loading_row.display  # the batches tell the rest
        assert re.fullmatch(
            r"12/12 in \d+\.\d s · done · loss 1\.500", progress_rows(app)["math/none_cot"]
        )
        log = app.query_one(LogPanel).lines_recorded
        assert any(line.endswith("planned 1 run: 12 samples, 12 to compute") for line in log)
        stage_lines = [line for line in log if " (at " in line]
        assert [line.split(" information ")[1].split(" (at ")[0] for line in stage_lines] == [
            "importing torch and transformers",
            "loading the tokenizer",
            "loading weights",
            "moving the model to cpu",
            "computing the first batch",
        ]
        assert re.search(r"request done in \d+\.\d s \(loading \d+\.\d s\)$", log[-1])
        assert any(str(n.message).startswith("Run complete in ") for n in app._notifications)


def test_a_loading_stage_reads_at_a_glance():
    weights = LoadStage("weights", "loading weights", 12, 36)
    assert stage_details(weights, 3.24) == "3.2 s · loading weights 12/36"
    assert stage_details(LoadStage("device", "moving the model to cuda"), 75) == (
        "1m15s · moving the model to cuda"
    )


async def test_a_request_that_fails_while_loading_says_where_and_stops_the_clock(
    script: Script, model: str
):
    """A load that failed must not look like one still going (the loading row ticked on)."""
    script.fail_after = 0  # fails where the first batch would be computed
    app = LayerscopeApp(model=model, poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot, ["none_cot", "detailed_cot"])
        script.gate.release()
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        loading_row = app.query_one("#load-stage", ProgressRow)
        said = str(loading_row.query_one(".progress-details").render())
        assert re.fullmatch(r"failed after \d+\.\d s · computing the first batch", said)
        assert progress_rows(app) == {
            "math/none_cot": "not started (failed)",
            "math/detailed_cot": "not started (failed)",
        }
        panel = app.query_one(RunProgressPanel)
        assert not any(row.running for row in [loading_row, *panel.rows.values()])
        log = app.query_one(LogPanel).lines_recorded
        assert re.search(r"run failed after \d+\.\d s: CUDA out of memory\.$", log[-1])


async def test_a_wrong_model_field_drops_the_cached_marks_of_the_previous_model(
    script: Script, model: str, tmp_path: Path
):
    """The type list said `cached` for the last usable model while the field showed another."""
    app = LayerscopeApp(model=model, poll_seconds=0)
    app.run_controller.plan_delay = 0.01  # plan at once: the test waits on the marks
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(10):
            script.gate.release()
        await start(app, pilot, ["none_cot"])
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        await pilot.press("1")
        types = app.query_one("#type-list")

        def marked() -> bool:
            return "cached" in str(types.get_option("type-none_cot").prompt)

        await until(app, pilot, marked, "the cached mark")
        await type_into(app, pilot, "#model-path", str(tmp_path / "nowhere"))
        await until(app, pilot, lambda: not marked(), "the mark to go")
        await type_into(app, pilot, "#model-path", model)  # back to the computed model
        await until(app, pilot, marked, "the cached mark again")


def test_a_runs_progress_gives_way_to_its_next_but_a_status_change_never_does():
    from layerscope.app.tui.messages import RunProgressed

    def progressed(run_id: str, done: int, status: str = "running", request_id: int = 1):
        progress = Progress(run_id, "math", "none_cot", done, 8, 1.0, 2.0, 0.5, status)
        return RunProgressed(request_id, progress)

    first = progressed("a" * 64, 1)
    assert first.can_replace(progressed("a" * 64, 2))  # the later count supersedes
    assert not first.can_replace(progressed("b" * 64, 2))  # another run's is its own
    assert not first.can_replace(progressed("a" * 64, 2, request_id=2))  # another request's
    assert not progressed("a" * 64, 8, "complete").can_replace(progressed("a" * 64, 8))


async def test_a_burst_of_progress_is_drawn_once_per_run(monkeypatch):
    """Batches that land faster than the UI draws: the panel draws the latest of each run,
    and every run's final status."""
    from layerscope.app.tui.messages import RunProgressed

    drawn: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        RunProgressPanel,
        "show_progress",
        lambda self, progress: drawn.append((progress.run_id[0], progress.done, progress.status)),
    )
    app = LayerscopeApp(poll_seconds=0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        burst = [
            *(
                Progress("a" * 64, "math", "none_cot", d, 8, 1.0, 2.0, 0.5, "running")
                for d in (1, 2, 3)
            ),
            Progress("a" * 64, "math", "none_cot", 8, 8, 1.0, 0.0, 0.5, "complete"),
            *(
                Progress("b" * 64, "math", "detailed_cot", d, 8, 1.0, 2.0, 0.5, "running")
                for d in (1, 2)
            ),
        ]
        for progress in burst:  # queued together: nothing is handled before the loop yields
            app.post_message(RunProgressed(1, progress))
        await pilot.pause()
    assert drawn == [("a", 8, "complete"), ("b", 2, "running")]
