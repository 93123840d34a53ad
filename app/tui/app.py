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
* One owner per concern: the run controller (services/run_controller.py) computes, plans and
  cancels; the cache reader (services/cache_reader.py) does every read; the significance pool
  (services/significance_pool.py) computes the chart's tests in a process of its own, made at
  the first test and ended when the explorer closes; the App owns what is
  shared between tabs (the runs in the cache, the overlaid runs, the response-length filter,
  the theme): the run list and the filter flow into the panes' own reactives, bound to the
  App's (one scan, one list, every tab), the rest it pushes; widgets never read App
  attributes. Widgets ask for screens by message (SampleOpened, LengthFilterRequested); the
  App opens them. The App's handling of runs (picks, plan, progress, end) is
  run_handling.py's, what it keeps across sessions kept_view.py's; export, help and the
  command palette live in commands.py, the request rule in request_builder.py.
* Nothing a user does should end in a traceback: worker errors become a notification and a
  line in the log panel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from layerscope.app.compat.textual import is_quitting
from layerscope.app.tui.browse_tabs import BrowseTabs
from layerscope.app.tui.errors import problem_line, reported
from layerscope.app.tui.kept_view import KeptView
from layerscope.app.tui.keys import APP_BINDINGS, POLL_SECONDS, TABS
from layerscope.app.tui.messages import (
    RUNS_NOT_READ,
    CacheScanned,
    ComparisonChanged,
    LengthFilterRequested,
    MarkedSamplesWriteRequested,
    PaperTableRequested,
    ProblemReported,
    RunFocused,
    SampleOpened,
)
from layerscope.app.tui.run_handling import RunHandling
from layerscope.app.tui.services.cache_reader import CacheReader
from layerscope.app.tui.services.run_controller import RunController
from layerscope.app.tui.services.significance_pool import ExecutorFactory, SignificancePool
from layerscope.app.tui.state import LastPicks, UiState, default_state_path, load_state, save_state
from layerscope.app.tui.widgets.frame.fitted_footer import FittedFooter
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.frame.run_progress import RunProgressPanel

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from textual.theme import Theme

    from layerscope.analysis.base.records import RunInfo
    from layerscope.app.tui.widgets.setup.setup_view import SetupPane


class LayerscopeApp(RunHandling, KeptView, App[None]):
    """The explorer. `db` is the results cache file; `model`/`dataset` preselect the pickers."""

    # Absolute, so that subclasses defined elsewhere still find the styles.
    CSS_PATH: ClassVar[str] = str(Path(__file__).parent / "layerscope.tcss")
    TITLE = "layerscope"
    BINDINGS: ClassVar[list[BindingType]] = APP_BINDINGS

    # What the tabs share, the App its one owner: the runs in the cache by id (in the cache's
    # order) and the response-length filter flow into the panes' reactives bound to these
    # (BrowseTabs.bind). Every scan pushes its list, unchanged or not (the tree of an empty
    # cache says so once the cache is read).
    runs_by_id: var[Mapping[str, RunInfo]] = var(RUNS_NOT_READ, init=False, always_update=True)
    length_range: var[tuple[int, int] | None] = var(None, init=False)

    def __init__(
        self,
        model: str | None = None,
        dataset: str | None = None,
        db: str | Path | None = None,
        poll_seconds: float = POLL_SECONDS,
        significance_executor: ExecutorFactory | None = None,
    ) -> None:
        """`significance_executor` makes the executor the chart's tests of significance are
        computed in (default: one spawned process; tests pass a thread pool's)."""
        super().__init__()
        from layerscope.analysis.base.locations import default_db_path

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
        self.reader = CacheReader(self.db_path)
        self.run_controller = RunController(self, self.db_path)
        self.significance = SignificancePool(self.db_path, significance_executor)
        # What the tabs share besides the reactives above; the App pushes it into the widgets.
        self.comparison: list[str] = []
        self.focused_run: str | None = None
        self._scans = self.reader.channel(self, "cache-scan", coalesce=True)
        self._scans.on_stale = self.scan_cache
        self.browse: BrowseTabs | None = None  # mounted after the first frame
        self.setup_pane: SetupPane | None = None  # likewise
        self.run_when_ready = False  # r was pressed before the tabs were filled
        # --model/--dataset ask for the Setup tab; else a restored chart is shown at once
        self.opened_for_setup = bool(model or dataset)
        self.init_kept_view()

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="setup", id="tabs"):
            # Every pane but the log's is filled right after the first frame (browse_tabs.py).
            yield TabPane("1 Setup", id="setup")
            yield TabPane("2 Runs", id="runs")
            yield TabPane("3 Chart", id="chart")
            yield TabPane("4 Cosines", id="cosines")
            yield TabPane("5 Samples", id="samples")
            with TabPane("6 Log", id="log"):
                yield LogPanel(id="log-panel")
        yield RunProgressPanel(id="progress-panel")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one(RunProgressPanel).display = False
        self.query_one(LogPanel).record(f"results cache: {self.db_path}")
        # Once the first frame is painted (and its other after-refresh callbacks have run).
        self.call_after_refresh(self.call_later, self._mount_browse_tabs)

    async def _mount_browse_tabs(self) -> None:
        """After the first frame: the browsing tabs, then the cache scan that fills them.

        A user who quits at once closes the panes before they are filled: nothing to do then.
        """
        from textual.widget import MountError

        try:
            await self._fill_tabs()
        except MountError:
            if not is_quitting(self):  # not quitting: a real error
                raise

    async def _fill_tabs(self) -> None:
        from layerscope.app.tui.widgets.setup.setup_view import SetupPane

        setup = SetupPane(
            self.ui_state.last,
            self.ui_state.recent_models,
            self.ui_state.recent_datasets,
            id="setup-pane",
        )
        await self.query_one("#setup", TabPane).mount(setup)
        self.setup_pane = setup
        browse = BrowseTabs.create(
            self.reader, self.significance, dark=self.current_theme.dark, mono=self.no_color
        )
        await browse.mount_into(self)
        browse.bind(LayerscopeApp.runs_by_id, LayerscopeApp.length_range)
        self.browse = browse
        browse.compare.restore_view(self.ui_state.chart.view)
        self.scan_cache()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.scan_cache)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        tabs = self.query_one(TabbedContent)
        if tabs.active != self.first_tab():
            tabs.active = self.first_tab()  # its activation shows it
        else:
            self._tab_shown(tabs.active)
        if self.run_when_ready:
            self.run_when_ready = False
            self.action_run()

    def browse_tabs(self) -> BrowseTabs:
        """The browsing tabs; only called from what starts once they are mounted."""
        assert self.browse is not None, "browsing tabs not mounted yet"
        return self.browse

    # --- the cache ---------------------------------------------------------------------------

    def scan_cache(self) -> None:
        """Read the list of runs again (coalesced: one read at a time, then one more if asked)."""
        self._scans.request(lambda cache: CacheScanned(cache.runs()), lambda: CacheScanned(None))

    @reported
    def on_cache_scanned(self, message: CacheScanned) -> None:
        if not self._scans.accept(message):
            return
        if message.runs is None:
            self.report_problem("Cache unreadable", message.error or "unknown error", "warning")
            return
        # Into every pane at once (the chart reads again when an overlaid run changed).
        self.runs_by_id = {run.id: run for run in message.runs}
        self.restore_comparison(self.runs_by_id)

    async def action_quit(self) -> None:
        self.run_controller.cancel()
        self.keep_picks()  # while the Setup tab is still there to read
        self.exit()

    def on_unmount(self) -> None:
        self.run_controller.cancel()
        self.significance.shutdown()  # no tests' process outlives the explorer
        self.save_chart()

    def keep_picks(self) -> None:
        """Remember a model and dataset the user picked or typed even when no run started:
        what the Setup tab shows, if its fields check out, is the next start's."""

        if self.setup_pane is None:
            return
        try:
            picks = self.setup_pane.picks()
        except ValueError:  # a settings field that does not parse: keep the last good picks
            return
        usable = picks.model_ok and picks.dataset_ok and not picks.checking
        if not usable or picks.model_problem or picks.dataset_problem:
            return
        kept = LastPicks(picks.model, picks.dataset, picks.types, dict(picks.values))
        if kept != self.ui_state.last:
            self.ui_state.remember(kept.model, kept.dataset)
            self.ui_state.last = kept
            save_state(self.state_path, self.ui_state)

    # --- problems ----------------------------------------------------------------------------

    def on_problem_reported(self, message: ProblemReported) -> None:
        self.report_problem(message.title, message.message, message.severity)

    def report_problem(self, title: str, text: str, severity: str = "error") -> None:
        """A notification and a line in the log panel."""
        self.notify(text, title=title, severity=severity, timeout=8)  # type: ignore[arg-type]
        self.query_one(LogPanel).record(f"{title}: {text}", severity)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.report_problem("Internal error", problem_line(event.worker.error))

    # --- browsing ----------------------------------------------------------------------------

    def set_comparison(self, run_ids: list[str]) -> None:
        self.comparison = list(dict.fromkeys(run_ids))
        self.browse_tabs().runs.set_selected(self.comparison)
        self._show_comparison()

    def on_comparison_changed(self, message: ComparisonChanged) -> None:
        self.comparison = list(message.run_ids)
        self._show_comparison()

    def _show_comparison(self) -> None:
        """The overlaid runs: drawn in the chart, chosen among in Samples and Cosines (n)."""
        browse = self.browse_tabs()
        browse.compare.show_runs(self.comparison)
        browse.samples.set_overlaid(self.comparison)
        browse.cosines.set_overlaid(self.comparison)

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
        return self.run_controller.computing or (run is not None and run.status == "running")

    def on_paper_table_requested(self, message: PaperTableRequested) -> None:
        from layerscope.app.tui.screens.paper_table import PaperTableScreen

        self.push_screen(PaperTableScreen(message.title, message.text))

    def on_length_filter_requested(self, message: LengthFilterRequested) -> None:
        from layerscope.app.tui.screens.length_filter import LengthFilterScreen

        def chosen(value: tuple[int, int] | bool | None) -> None:
            if value is False:
                return
            self.length_range = value if isinstance(value, tuple) else None  # into the panes

        self.push_screen(LengthFilterScreen(self.length_range), chosen)

    def on_marked_samples_write_requested(self, message: MarkedSamplesWriteRequested) -> None:
        from layerscope.app.tui import commands

        run = self.runs_by_id.get(message.run_id)
        if run is not None:
            commands.write_marked(self, run, message.indices, message.label)

    def on_sample_opened(self, message: SampleOpened) -> None:
        from layerscope.app.labels import full_label
        from layerscope.app.tui.screens.sample_detail import SampleDetailScreen

        run = self.runs_by_id.get(message.run_id)
        label = full_label(run) if run is not None else message.run_id
        screen = SampleDetailScreen(
            self.reader,
            message.run_id,
            message.row,
            label,
            message.metric,
            run=run,
            dark=self.current_theme.dark,
        )
        self.push_screen(screen)

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
        if is_quitting(self) or not self.is_running:
            return  # a tab switch still queued while quitting: its widgets may be gone
        if tab == "log":
            self.query_one(LogPanel).focus()
            return
        browse = self.browse
        if browse is None:
            return  # mounted in a moment, and shown then
        if tab == "setup":
            self.query_one("#model-list").focus()
            return
        run = self.current_run()
        growing = run is not None and self._is_growing(run)
        if tab == "samples":
            browse.samples.show_run(run, refresh=growing)
            self.query_one("#samples-table").focus()
        elif tab == "cosines":
            browse.cosines.show_run(run, refresh=growing)
            self.query_one("#cosine-heatmap").focus()
        elif tab == "chart":
            self.query_one("#layer-chart").focus()
        elif tab == "runs":
            browse.runs.focus()

    # --- export, help, themes, palette -------------------------------------------------------

    def action_export(self) -> None:
        from layerscope.app.tui import commands

        if self.browse is not None:
            commands.export_shown(self)

    def action_help(self) -> None:
        from layerscope.app.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        from layerscope.app.tui import commands

        self.push_screen(HelpScreen(commands.help_sections(self)))

    def _theme_changed(self, theme: Theme) -> None:
        from layerscope.app.tui.screens.sample_detail import SampleDetailScreen

        self.browse_tabs().compare.dark = theme.dark
        for screen in self.screen_stack:
            if isinstance(screen, SampleDetailScreen):
                screen.set_dark(theme.dark)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        from layerscope.app.tui import commands

        yield from super().get_system_commands(screen)
        if self.browse is not None:
            yield from commands.palette_commands(self, TABS)


def run_tui(model: str | None = None, dataset: str | None = None, db: str | None = None) -> int:
    """Open the explorer (blocks until the user quits); its exit status: 1 when it stopped on
    an error (Textual has printed it), 0 otherwise."""
    app = LayerscopeApp(model=model, dataset=dataset, db=db)
    app.run()
    return app.return_code or 0
