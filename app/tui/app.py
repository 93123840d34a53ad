"""The layerscope explorer: pick, run in the background, browse and compare layer-wise charts.

Why it is built this way:

* People use it over SSH on GPU servers, often inside tmux, by keyboard only: every action has
  a key shown in the footer and a command palette entry, colours stay within 256 (and runs are
  told apart by marker when NO_COLOR is set), and it is laid out for 80x24 upwards.
* The first frame must come fast and browsing must work without torch: nothing imported at
  startup imports torch or transformers. The runner imports them inside the compute worker,
  when a computation actually starts.
* One thread worker per run request turns the runner's progress generator into messages; the
  UI thread never computes and never blocks on the cache (reads run in short thread workers
  too), so keys are answered while the GPU works. Cancelling sets an Event the engine checks
  between batches; every finished sample is already in the cache, so running again resumes.
* Nothing a user does should end in a traceback: worker errors become a notification and a
  line in the log panel.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Button, Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from layerscope.app.tui.errors import reported
from layerscope.app.tui.messages import (
    CacheScanned,
    ComparisonChanged,
    DatasetChosen,
    ModelChosen,
    PlanComputed,
    ProblemReported,
    RunEnded,
    RunFocused,
    RunProgressed,
    RunStarted,
    SettingsChanged,
)
from layerscope.app.tui.screens.export_dialog import ExportDialog
from layerscope.app.tui.screens.help import HelpScreen
from layerscope.app.tui.state import LastPicks, UiState, default_state_path, load_state, save_state
from layerscope.app.tui.widgets.compare_view import STATISTICS, ComparePane
from layerscope.app.tui.widgets.cosine_view import CosinePane
from layerscope.app.tui.widgets.layer_chart import LayerChart
from layerscope.app.tui.widgets.log_panel import LogPanel
from layerscope.app.tui.widgets.run_progress import RunProgressPanel
from layerscope.app.tui.widgets.runs_browser import RunsBrowser
from layerscope.app.tui.widgets.samples_view import SamplesPane
from layerscope.app.tui.widgets.setup_view import SetupPane

TABS = (
    ("setup", "Setup"),
    ("runs", "Runs"),
    ("chart", "Chart"),
    ("cosines", "Cosines"),
    ("samples", "Samples"),
    ("log", "Log"),
)
TAB_GROUP = Binding.Group("Tabs", compact=True)
DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"
POLL_SECONDS = 2.0
PLAN_DELAY = 0.3
PROGRESS_LINGER = 8.0  # seconds the bars of a completed run stay up


def one_line(error: BaseException) -> str:
    """An exception as one line a user can read (type only when the message is empty)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class LayerscopeApp(App[None]):
    """The explorer. `db` is the results cache file; `model`/`dataset` preselect the pickers."""

    # Absolute, so that subclasses defined elsewhere still find the styles.
    CSS_PATH: ClassVar[str] = str(Path(__file__).parent / "layerscope.tcss")
    TITLE = "layerscope"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "question_mark,f1",
            "help",
            "Help",
            key_display="?",
            tooltip="This help: keys and what each tab is for (also F1)",
            id="app.help",
        ),
        Binding("r", "run", "Run", tooltip="Compute the checked response types", id="app.run"),
        Binding(
            "c",
            "cancel",
            "Cancel",
            tooltip="Stop the run after the current batch (finished samples are kept)",
            id="app.cancel",
        ),
        *(
            # Not in the footer: the tab titles show their numbers.
            Binding(
                str(n),
                f"show_tab('{tab}')",
                f"{title} tab",
                show=False,
                group=TAB_GROUP,
                id=f"app.tab_{tab}",
            )
            for n, (tab, title) in enumerate(TABS, start=1)
        ),
        Binding(
            "e",
            "export",
            "Export",
            tooltip="Write what is on screen: chart as text, tables as CSV",
            id="app.export",
        ),
        Binding("t", "toggle_theme", "Theme", tooltip="Light or dark theme", id="app.theme"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="app.quit"),
    ]

    def __init__(
        self,
        model: str | None = None,
        dataset: str | None = None,
        db: str | Path | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__()
        from layerscope.analysis.cache import default_db_path

        self.db_path = Path(db).expanduser() if db else default_db_path()
        self.state_path = default_state_path(self.db_path)
        self.ui_state: UiState = load_state(self.state_path)
        if model:
            self.ui_state.last.model = model
        if dataset:
            self.ui_state.last.dataset = dataset
            if dataset != "math":
                self.ui_state.last.types = None
        self.poll_seconds = poll_seconds
        self.no_color = "NO_COLOR" in os.environ
        self.runs_by_id: dict[str, Any] = {}
        self.comparison: list[str] = []
        self.focused_run: str | None = None
        self.length_range: tuple[int, int] | None = None
        self._request_id = 0
        self._active: dict[int, threading.Event] = {}
        self._scanning = False
        self._plan_token = 0
        self._plan_timer: Any = None
        if self.ui_state.theme in (DARK_THEME, LIGHT_THEME):
            self.theme = self.ui_state.theme

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        last = self.ui_state.last
        with TabbedContent(initial="setup", id="tabs"):
            with TabPane("1 Setup", id="setup"):
                yield SetupPane(
                    last,
                    self.ui_state.recent_models,
                    self.ui_state.recent_datasets,
                    id="setup-pane",
                )
            with TabPane("2 Runs", id="runs"):
                yield RunsBrowser(id="runs-browser")
            with TabPane("3 Chart", id="chart"):
                yield ComparePane(id="compare-pane")
            with TabPane("4 Cosines", id="cosines"):
                yield CosinePane(id="cosine-pane")
            with TabPane("5 Samples", id="samples"):
                yield SamplesPane(id="samples-pane")
            with TabPane("6 Log", id="log"):
                yield LogPanel(id="log-panel")
        yield RunProgressPanel(id="progress-panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(RunProgressPanel).display = False
        self.query_one(LogPanel).record(f"results cache: {self.db_path}")
        self.scan_cache()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.scan_cache)
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    # --- the cache ---------------------------------------------------------------------------

    def scan_cache(self) -> None:
        """Read the list of runs again (coalesced: one read at a time)."""
        if self._scanning:
            return
        self._scanning = True
        self._scan(self.db_path)

    @work(thread=True, group="cache-scan", exit_on_error=False)
    def _scan(self, db_path: Path) -> None:
        from layerscope.analysis.cache import CacheError, ResultsCache

        try:
            runs = ResultsCache(db_path).runs()
        except (CacheError, OSError) as error:
            self.post_message(CacheScanned(None, error=one_line(error)))
            return
        self.post_message(CacheScanned(runs))

    @reported
    def on_cache_scanned(self, message: CacheScanned) -> None:
        self._scanning = False
        if message.runs is None:
            self._problem("Cache unreadable", message.error or "unknown error", "warning")
            return
        previous = self.runs_by_id
        self.runs_by_id = {run.id: run for run in message.runs}
        self.query_one(RunsBrowser).update_runs(message.runs)
        changed = [
            run_id
            for run_id in self.comparison
            if previous.get(run_id) != self.runs_by_id.get(run_id)
        ]
        if changed:
            self.query_one(ComparePane).reload()

    # --- picking and planning ----------------------------------------------------------------

    def on_model_chosen(self, message: ModelChosen) -> None:
        self._schedule_plan()

    def on_dataset_chosen(self, message: DatasetChosen) -> None:
        self._schedule_plan()

    def on_settings_changed(self, message: SettingsChanged) -> None:
        self._schedule_plan()

    def _schedule_plan(self) -> None:
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.set_timer(PLAN_DELAY, self._start_plan)

    def _start_plan(self) -> None:
        self._plan_timer = None
        try:
            request = self._request_from_picks(require_types=False)
        except (ValueError, NoMatches):  # picks incomplete, or the app is closing
            return
        self._plan_token += 1
        self._plan(self._plan_token, request)

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _plan(self, token: int, request: Any) -> None:
        try:
            from layerscope.analysis.runner import plan

            planned = plan(request, self.db_path)
        except Exception as error:  # a plan is advisory: show why, never fail
            self.post_message(PlanComputed(token, [], error=one_line(error)))
            return
        self.post_message(PlanComputed(token, planned))

    @reported
    def on_plan_computed(self, message: PlanComputed) -> None:
        if message.token != self._plan_token:
            return
        if message.error:
            self.query_one(LogPanel).record(f"cache status unknown: {message.error}", "warning")
            return
        cached = {
            item.response_type: (int(item.cached), int(item.total), item.cached >= item.total > 0)
            for item in message.planned
        }
        self.query_one(SetupPane).set_cached(cached)

    def _request_from_picks(self, require_types: bool = True) -> Any:
        """A RunRequest from the Setup tab; ValueError with a message for the user."""
        from layerscope.analysis.settings import SettingError

        try:
            from layerscope.analysis.runner import RunRequest
        except ImportError as error:
            raise ValueError(f"computing is not available: {one_line(error)}") from None
        picks = self.query_one(SetupPane).picks()
        if not picks.model_ok:
            raise ValueError(f"model {picks.model!r} is not usable (see the Setup tab)")
        if not picks.dataset_ok:
            raise ValueError(f"dataset {picks.dataset!r} is not readable (see the Setup tab)")
        types = picks.types
        if require_types and not types:
            raise ValueError("check at least one response type (space in the list)")
        try:
            return RunRequest.from_settings(picks.model, picks.dataset, types, picks.values)
        except SettingError as error:
            raise ValueError(error.describe(lambda item: item.title)) from None

    def _remember_picks(self) -> None:
        picks = self.query_one(SetupPane).picks()
        self.ui_state.remember(picks.model, picks.dataset)
        self.ui_state.last = LastPicks(picks.model, picks.dataset, picks.types, picks.values)
        error = save_state(self.state_path, self.ui_state)
        if error:
            self.query_one(LogPanel).record(error, "warning")

    # --- computing ---------------------------------------------------------------------------

    def action_run(self) -> None:
        if self._active:
            self.notify("A run is in progress: c cancels it.", severity="warning")
            return
        try:
            request = self._request_from_picks()
        except ValueError as error:
            self._problem("Cannot run", str(error), "warning")
            self.action_show_tab("setup")
            return
        self._remember_picks()
        self._request_id += 1
        cancel = threading.Event()
        self._active[self._request_id] = cancel
        self.query_one(RunProgressPanel).reset()
        types = ", ".join(request.types or ["all types"])
        description = f"{request.model} on {Path(request.dataset).name}: {types}"
        self.query_one(LogPanel).record(f"run started: {description}")
        self._compute(self._request_id, request, cancel, description)
        self.action_show_tab("chart")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run-button":
            self.action_run()

    @work(thread=True, group="compute", exit_on_error=False)
    def _compute(
        self, request_id: int, request: Any, cancel: threading.Event, description: str
    ) -> None:
        outcome = "complete"
        message = ""
        try:
            from layerscope.analysis.runner import execute

            def planned(runs: list[Any]) -> None:
                self.post_message(RunStarted(request_id, description, runs))

            for progress in execute(request, db_path=self.db_path, cancel=cancel, on_plan=planned):
                self.post_message(RunProgressed(request_id, progress))
                if progress.status == "failed":
                    outcome = "failed"
                    message = progress.message or f"{progress.response_type} failed"
                    self.post_message(ProblemReported("Run failed", message))
                elif progress.message and progress.status == "running":
                    self.post_message(
                        ProblemReported(progress.response_type, progress.message, "warning")
                    )
            if cancel.is_set() and outcome != "failed":
                outcome = "cancelled"
        except Exception as error:  # out of memory, a model that fails to load, a bad file
            outcome = "failed"
            message = one_line(error)
            self.post_message(ProblemReported("Run failed", message))
        self.post_message(RunEnded(request_id, outcome, message))

    @reported
    def on_run_started(self, message: RunStarted) -> None:
        if not message.run_ids:
            return
        self.query_one(RunProgressPanel).show_planned(message.planned)
        self.set_comparison(message.run_ids)
        self.focused_run = message.run_ids[0]
        self.scan_cache()

    @reported
    def on_run_progressed(self, message: RunProgressed) -> None:
        progress = message.progress
        self.query_one(RunProgressPanel).show_progress(progress)
        if progress.run_id in self.comparison:
            self.query_one(ComparePane).reload()
        self.scan_cache()

    def on_run_ended(self, message: RunEnded) -> None:
        self._active.pop(message.request_id, None)
        log = self.query_one(LogPanel)
        if message.outcome == "complete":
            self.notify("Run complete.", title="layerscope")
            log.record("run complete")
            self.set_timer(PROGRESS_LINGER, self._hide_progress)
        elif message.outcome == "cancelled":
            self.notify("Cancelled: finished samples are kept; r resumes.", severity="warning")
            log.record("run cancelled; finished samples kept", "warning")
        else:
            log.record(f"run failed: {message.message}", "error")
        self.scan_cache()
        self.query_one(ComparePane).reload()
        self._schedule_plan()

    @property
    def computing(self) -> bool:
        """Whether a compute worker is running."""
        return bool(self._active)

    def _hide_progress(self) -> None:
        """Give the chart its room back once a completed run's bars have been seen."""
        if not self.computing:
            self.query_one(RunProgressPanel).display = False

    def action_cancel(self) -> None:
        if not self._active:
            self.notify("Nothing is running.")
            return
        for event in self._active.values():
            event.set()
        self.notify("Cancelling after the current batch…")

    def _cancel_all(self) -> None:
        for event in self._active.values():
            event.set()

    async def action_quit(self) -> None:
        self._cancel_all()
        self.exit()

    def on_unmount(self) -> None:
        self._cancel_all()

    # --- problems ----------------------------------------------------------------------------

    def on_problem_reported(self, message: ProblemReported) -> None:
        self._problem(message.title, message.message, message.severity)

    def _problem(self, title: str, text: str, severity: str = "error") -> None:
        self.notify(text, title=title, severity=severity, timeout=8)  # type: ignore[arg-type]
        self.query_one(LogPanel).record(f"{title}: {text}", severity)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self._problem("Internal error", one_line(event.worker.error))
            if event.worker.group == "cache-scan":
                self._scanning = False

    # --- browsing ----------------------------------------------------------------------------

    def set_comparison(self, run_ids: list[str]) -> None:
        self.comparison = list(dict.fromkeys(run_ids))
        self.query_one(RunsBrowser).set_selected(self.comparison)
        self.query_one(ComparePane).show_runs(self.comparison)

    def on_comparison_changed(self, message: ComparisonChanged) -> None:
        self.comparison = list(message.run_ids)
        self.query_one(ComparePane).show_runs(self.comparison)

    def on_run_focused(self, message: RunFocused) -> None:
        self.focused_run = message.run_id
        if message.open_tab:
            self.action_show_tab(message.open_tab)

    def current_run(self) -> str | None:
        """The run the Samples and Cosines tabs show: the focused one, else the first overlaid."""
        if self.focused_run in self.runs_by_id or (self.focused_run and not self.runs_by_id):
            return self.focused_run
        return self.comparison[0] if self.comparison else self.focused_run

    def _is_growing(self, run_id: str) -> bool:
        """Whether a run may have new samples since it was last shown (being computed)."""
        run = self.runs_by_id.get(run_id)
        return self.computing or (run is not None and run.status == "running")

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != tab:
            tabs.active = tab
        else:
            self._tab_shown(tab)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self._tab_shown(event.pane.id)

    def _tab_shown(self, tab: str) -> None:
        run = self.current_run()
        growing = run is not None and self._is_growing(run)
        if tab == "samples":
            self.query_one(SamplesPane).show_run(run, refresh=growing)
            self.query_one("#samples-table").focus()
        elif tab == "cosines":
            self.query_one(CosinePane).show_run(run, refresh=growing)
            self.query_one("#cosine-heatmap").focus()
        elif tab == "chart":
            self.query_one(LayerChart).focus()
        elif tab == "runs":
            self.query_one(RunsBrowser).focus()
        elif tab == "log":
            self.query_one(LogPanel).focus()
        elif tab == "setup":
            self.query_one("#model-list").focus()

    # --- export, help, themes, palette -------------------------------------------------------

    def action_export(self) -> None:
        tab = self.query_one(TabbedContent).active
        texts: dict[str, str] = {}
        tables: dict[str, list[list[str]]] = {}
        if tab == "chart":
            pane = self.query_one(ComparePane)
            texts[f"chart-{pane.metric}"] = pane.export_chart_text()
            tables[f"comparison-{pane.metric}"] = pane.export_table_rows()
        elif tab == "samples":
            pane_samples = self.query_one(SamplesPane)
            tables[f"samples-{(pane_samples.run_id or 'none')[:12]}"] = pane_samples.export_rows()
        elif tab == "cosines":
            pane_cosines = self.query_one(CosinePane)
            name = f"cosines-{(pane_cosines.run_id or 'none')[:12]}-{pane_cosines.projection}"
            tables[name] = pane_cosines.export_rows()
        elif tab == "runs":
            tables["runs"] = self._runs_rows()
        elif tab == "log":
            texts["log"] = "\n".join(self.query_one(LogPanel).lines_recorded) + "\n"
        else:
            self.notify("Nothing to export on this tab: go to Chart, Samples, Cosines or Runs.")
            return
        what = ", ".join([f"{name}.txt" for name in texts] + [f"{name}.csv" for name in tables])

        def chosen(folder: str | None) -> None:
            if folder is None:
                return
            from layerscope.app.tui.export import write_exports

            try:
                written = write_exports(Path(folder), texts, tables)
            except OSError as error:
                self._problem("Export failed", f"{folder}: {error.strerror or error}")
                return
            self.notify("Wrote " + ", ".join(str(path) for path in written), title="Exported")
            self.query_one(LogPanel).record("exported " + ", ".join(map(str, written)))

        self.push_screen(ExportDialog(what, "layerscope-export"), chosen)

    def _runs_rows(self) -> list[list[str]]:
        rows = [["id", "model", "dataset", "response_type", "mode", "status", "done", "total"]]
        for run in self.runs_by_id.values():
            rows.append(
                [
                    run.id,
                    run.model,
                    run.dataset,
                    run.response_type,
                    run.mode,
                    run.status,
                    str(run.samples_done),
                    str(run.samples_total),
                ]
            )
        return rows

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        palette = Binding(
            "ctrl+p", "command_palette", "Command palette: every action by name", id="help.palette"
        )
        sections = [
            ("Everywhere", [*self._bindings_of(self), palette]),
            ("Chart tab", self._bindings_of(ComparePane)),
            ("Runs tab", self._bindings_of(RunsBrowser)),
            ("Samples tab", self._bindings_of(SamplesPane)),
            ("Cosines tab", self._bindings_of(CosinePane)),
        ]
        from layerscope.app.tui.screens.sample_detail import SampleDetailScreen

        sections.append(("Sample detail", self._bindings_of(SampleDetailScreen)))
        self.push_screen(HelpScreen(sections))

    @staticmethod
    def _bindings_of(owner: Any) -> list[Binding]:
        bindings = []
        for item in owner.BINDINGS:
            if isinstance(item, Binding) and item.id and item.description:
                bindings.append(item)
        return bindings

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME
        self.ui_state.theme = self.theme
        save_state(self.state_path, self.ui_state)

    def _theme_changed(self, theme: Any) -> None:
        self.query_one(ComparePane).reload()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Run", "Compute the checked response types (r)", self.action_run)
        yield SystemCommand("Cancel run", "Stop after the current batch (c)", self.action_cancel)
        yield SystemCommand("Export", "Write what is on screen to files (e)", self.action_export)
        yield SystemCommand("Help", "Keys and what each tab is for (?)", self.action_help)
        yield SystemCommand(
            "Toggle light/dark",
            "Switch between the light and dark theme (t)",
            self.action_toggle_theme,
        )
        for position, (tab, title) in enumerate(TABS, start=1):
            yield SystemCommand(
                f"Go to {title}",
                f"Show the {title} tab ({position})",
                lambda t=tab: self.action_show_tab(t),
            )
        pane = self.query_one(ComparePane)

        def show_statistic(metric: str) -> None:
            pane.set_metric(metric)
            self.action_show_tab("chart")

        for metric in STATISTICS:
            yield SystemCommand(
                f"Chart statistic: {metric}",
                "Show this statistic in the chart (s cycles)",
                lambda m=metric: show_statistic(m),
            )
        yield SystemCommand("Chart: log scale", "Toggle the log y axis (l)", pane.action_toggle_log)
        yield SystemCommand(
            "Chart: interval", "Band, error bars or none (b)", pane.action_cycle_band
        )
        yield SystemCommand(
            "Chart: response-length filter",
            "Restrict to a token range (f)",
            pane.action_length_filter,
        )
        yield SystemCommand("Chart: MLP", "Show or hide gate/up/down (m)", pane.action_toggle_mlp)
        yield SystemCommand("Refresh runs", "Read the cache again now", self.scan_cache)


def run_tui(model: str | None = None, dataset: str | None = None, db: str | None = None) -> None:
    """Open the explorer (blocks until the user quits)."""
    LayerscopeApp(model=model, dataset=dataset, db=db).run()
