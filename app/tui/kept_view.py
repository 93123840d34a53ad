"""The App's part that keeps the explorer as the user left it: the overlaid runs, the chart's
view and the theme, restored at the next start with the same cache.

Why apart from app.py: what is kept and when it is written (as it changes, so a dropped SSH
session, SIGHUP and no clean exit, loses nothing) is one concern with its own rules (the runs are
restored once the first scan says which are still there; a run started meanwhile wins), and the
file's format is state.py's. The App calls `restore_comparison` after each scan and
`save_chart` when the chart's runs or view change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import App
from textual.widgets import TabbedContent

from layerscope.app.tui.keys import DARK_THEME, LIGHT_THEME
from layerscope.app.tui.messages import ChartViewChanged
from layerscope.app.tui.state import ChartState, cache_key, save_state
from layerscope.app.tui.widgets.frame.log_panel import LogPanel

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    from layerscope.app.tui.browse_tabs import BrowseTabs
    from layerscope.app.tui.state import UiState


class KeptView(App[None]):
    """Mixed into the explorer's App (app.py), which owns the state it keeps."""

    if TYPE_CHECKING:  # the App's, set in its __init__ and after the first frame
        db_path: Path
        state_path: Path
        ui_state: UiState
        browse: BrowseTabs | None
        comparison: list[str]
        opened_for_setup: bool

        def set_comparison(self, run_ids: list[str]) -> None: ...

        def action_show_tab(self, tab: str) -> None: ...

    def init_kept_view(self) -> None:
        """Before the first scan: which runs to overlay again, and the theme of last time."""
        # The runs the chart overlaid when this cache was last open: overlaid again once the
        # first scan says which are still there (None: done, or nothing to restore).
        self._runs_to_restore: list[str] | None = self.ui_state.chart.runs_in(self.db_path)
        if self.ui_state.theme in (DARK_THEME, LIGHT_THEME):
            self.theme = self.ui_state.theme

    def first_tab(self) -> str:
        """The tab the explorer opens on: the chart of the last session when there is one to
        restore (unless --model or --dataset asked for Setup)."""
        return "chart" if self._runs_to_restore and not self.opened_for_setup else "setup"

    def restore_comparison(self, stored: Collection[str]) -> None:
        """After the first scan: overlay the runs of the last session still in the cache (the
        ids `stored`)."""
        if self._runs_to_restore is None:
            return
        wanted, self._runs_to_restore = self._runs_to_restore, None
        if self.comparison:  # a run was started meanwhile: its runs are shown
            return
        kept = [run_id for run_id in wanted if run_id in stored]
        if kept:
            self.set_comparison(kept)
        elif self.query_one(TabbedContent).active == "chart" and not self.opened_for_setup:
            self.action_show_tab("setup")  # opened on the chart to restore: nothing is left
        if len(kept) < len(wanted):
            gone = len(wanted) - len(kept)
            self.query_one(LogPanel).record(
                f"{gone} run{'s' * (gone != 1)} overlaid in the last session "
                f"{'are' if gone != 1 else 'is'} no longer in the cache"
            )

    def on_chart_view_changed(self, _message: ChartViewChanged) -> None:
        self.save_chart()

    def save_chart(self) -> None:
        """Keep the chart's runs and view for the next start with this cache: saved as they
        change, so a dropped SSH session (SIGHUP, no clean exit) loses nothing."""
        if self.browse is None:
            return  # quit before the tabs were filled: keep what the file has
        runs = self.comparison if self._runs_to_restore is None else self._runs_to_restore
        chart = ChartState(cache_key(self.db_path), list(runs), self.browse.compare.view_settings())
        if chart == self.ui_state.chart:
            return
        self.ui_state.chart = chart
        save_state(self.state_path, self.ui_state)

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME
        self.ui_state.theme = self.theme
        save_state(self.state_path, self.ui_state)
