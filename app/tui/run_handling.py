"""The App's part that computes: from the Setup tab's picks to a plan, a run, its progress, its end.

Why apart from app.py: starting and following a run is one story (the picks are checked, the
plan says what is cached, the run's messages fill the progress panel and the log, its end says
how it went and reads the cache again) that shares nothing with browsing but the overlaid runs
and the cache scan, which it asks the App for. The run controller (services/run_controller.py)
does the work in a thread worker; these handlers only turn its messages into what the user sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.css.query import NoMatches
from textual.widgets import Button

from layerscope.app.tui.errors import reported
from layerscope.app.tui.keys import PROGRESS_LINGER
from layerscope.app.tui.messages import (
    DatasetChosen,
    LoadStageReached,
    ModelChosen,
    PickerSettled,
    PlanComputed,
    RunEnded,
    RunProgressed,
    RunStarted,
    SettingsChanged,
)
from layerscope.app.tui.request_builder import build_request
from layerscope.app.tui.state import save_state
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.frame.run_progress import RunProgressPanel

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunRequest
    from layerscope.app.tui.browse_tabs import BrowseTabs
    from layerscope.app.tui.services.run_controller import RunController
    from layerscope.app.tui.state import UiState
    from layerscope.app.tui.widgets.setup.setup_view import SetupPane


class RunHandling(App[None]):
    """Mixed into the explorer's App (app.py), which owns what these handlers use."""

    if TYPE_CHECKING:  # the App's, set in its __init__ and after the first frame
        run_controller: RunController
        ui_state: UiState
        state_path: Path
        browse: BrowseTabs | None
        setup_pane: SetupPane | None
        focused_run: str | None
        run_when_ready: bool

        def browse_tabs(self) -> BrowseTabs: ...

        def scan_cache(self) -> None: ...

        def set_comparison(self, run_ids: list[str]) -> None: ...

        def report_problem(self, title: str, text: str, severity: str = "error") -> None: ...

        def action_show_tab(self, tab: str) -> None: ...

    # --- picking and planning ----------------------------------------------------------------

    def on_picker_settled(self, message: PickerSettled) -> None:
        setup = self.setup_pane
        if not self.run_when_ready or setup is None:
            return
        try:
            checking = setup.picks().checking
        except ValueError:  # a settings field that does not parse: the run says so
            checking = ()
        if not checking:
            self.run_when_ready = False
            self.action_run()

    def on_model_chosen(self, message: ModelChosen) -> None:
        self.run_controller.schedule_plan(self._plan_request)

    def on_dataset_chosen(self, message: DatasetChosen) -> None:
        self.run_controller.schedule_plan(self._plan_request)

    def on_settings_changed(self, message: SettingsChanged) -> None:
        self.run_controller.schedule_plan(self._plan_request)

    def _plan_request(self) -> RunRequest | None:
        """The request the current picks make, types optional (None: picks incomplete)."""
        try:
            if self.setup_pane is None:
                return None
            request, _ = build_request(self.setup_pane.picks(), require_types=False)
        except NoMatches:  # the app is closing
            return None
        except ValueError:  # picks incomplete: no cache status applies to what Setup shows
            if self.setup_pane is not None:
                self.setup_pane.set_cached({})
            return None
        return request

    @reported
    def on_plan_computed(self, message: PlanComputed) -> None:
        if not self.run_controller.is_current(message):
            return
        if message.error:
            self.query_one(LogPanel).record(f"cache status unknown: {message.error}", "warning")
            return
        cached = {
            f"{item.dataset}/{item.response_type}": (
                int(item.cached),
                int(item.total),
                item.cached >= item.total > 0,
            )
            for item in message.planned
        }
        if self.setup_pane is not None:
            self.setup_pane.set_cached(cached)

    # --- computing ---------------------------------------------------------------------------

    def action_run(self) -> None:
        if self.browse is None or self.setup_pane is None:
            # Pressed in the moment before the tabs are filled: run as soon as they are, with
            # what Setup then shows (a key press must not be lost on a busy machine).
            self.run_when_ready = True
            return
        if self.run_controller.computing:
            self.notify("A run is in progress: c cancels it.", severity="warning")
            return
        try:
            picks = self.setup_pane.picks()
        except ValueError as error:  # a settings field that does not parse: it names itself
            self.report_problem("Cannot run", str(error), "warning")
            self.action_show_tab("setup")
            return
        if picks.checking:
            # The fields are still being checked: run once they are, with what they then hold.
            self.run_when_ready = True
            self.query_one(LogPanel).record(
                f"run waits for the {' and '.join(picks.checking)} check to finish"
            )
            return
        try:
            request, remembered = build_request(picks)
        except ValueError as error:
            self.report_problem("Cannot run", str(error), "warning")
            self.action_show_tab("setup")
            return
        self.ui_state.remember(remembered.model, remembered.dataset)
        self.ui_state.last = remembered
        failure = save_state(self.state_path, self.ui_state)
        if failure:
            self.query_one(LogPanel).record(failure, "warning")
        self.query_one(RunProgressPanel).reset()
        types = ", ".join(request.types or ["all types"])
        description = f"{request.model} on {Path(request.dataset).name}: {types}"
        self.query_one(LogPanel).record(f"run started: {description}")
        self.run_controller.start(request, description)
        self.browse.compare.computing = True
        self.action_show_tab("chart")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run-button":
            self.action_run()

    @reported
    def on_run_started(self, message: RunStarted) -> None:
        if not message.run_ids:
            return
        total = sum(item.total for item in message.planned)
        cached = sum(item.cached for item in message.planned)
        runs = f"{len(message.planned)} run{'s' if len(message.planned) > 1 else ''}"
        self.query_one(LogPanel).record(
            f"planned {runs}: {total} samples, {total - cached} to compute"
        )
        self.query_one(RunProgressPanel).show_planned(message.planned)
        self.set_comparison(message.run_ids)
        self.focused_run = message.run_ids[0]
        self.scan_cache()

    @reported
    def on_load_stage_reached(self, message: LoadStageReached) -> None:
        from layerscope.app.labels import duration

        self.query_one(RunProgressPanel).show_stage(message.stage, message.elapsed)
        if message.begins:
            self.query_one(LogPanel).record(
                f"{message.stage.description} (at {duration(message.elapsed)})"
            )

    @reported
    def on_run_progressed(self, message: RunProgressed) -> None:
        self.query_one(RunProgressPanel).show_progress(message.progress)
        # The scan finds the batch in the run's counts and redraws the chart once (reloading
        # here too read every comparison twice per batch, significance tests included).
        self.scan_cache()

    def on_run_ended(self, message: RunEnded) -> None:
        from layerscope.app.labels import duration

        self.run_controller.ended(message.request_id)
        self.browse_tabs().compare.computing = self.run_controller.computing
        self.query_one(RunProgressPanel).request_ended(message.outcome)
        log = self.query_one(LogPanel)
        took = duration(message.elapsed)
        loading = "" if message.loading is None else f" (loading {duration(message.loading)})"
        if message.outcome == "complete":
            self.notify(f"Run complete in {took}.", title="layerscope")
            log.record(f"request done in {took}{loading or ' (all cached: nothing loaded)'}")
            self.set_timer(PROGRESS_LINGER, self._hide_progress)
        elif message.outcome == "cancelled":
            self.notify("Cancelled: finished samples are kept; r resumes.", severity="warning")
            log.record(f"run cancelled after {took}{loading}; finished samples kept", "warning")
        else:
            log.record(f"run failed after {took}: {message.message}", "error")
        self.scan_cache()
        self.browse_tabs().compare.reload()
        self.run_controller.schedule_plan(self._plan_request)

    def _hide_progress(self) -> None:
        """Give the chart its room back once a completed run's bars have been seen."""
        if not self.run_controller.computing:
            self.query_one(RunProgressPanel).display = False

    def action_cancel(self) -> None:
        if not self.run_controller.cancel():
            self.notify("Nothing is running.")
            return
        self.notify("Cancelling once the batch in flight is stored…")
