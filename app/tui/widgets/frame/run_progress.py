"""The progress panel: the model's loading stage, then one row per response type being
computed, docked above the footer.

Visible from every tab, so a user can watch the chart grow while the bars advance; it hides
itself when nothing has run in this session. The loading row shows from the first stage until
the first batch has landed (or a run ends): the rows below then tell the rest.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical

from layerscope.app.tui.widgets.frame.progress_row import ProgressRow

TICK_SECONDS = 1.0  # how often running rows redraw their elapsed time


class RunProgressPanel(Vertical):
    """Rows keyed by run id, in the order the runs started, under the loading row."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: dict[str, ProgressRow] = {}
        self.loading_row = ProgressRow("loading the model", id="load-stage")

    def compose(self) -> ComposeResult:
        yield self.loading_row

    def on_mount(self) -> None:
        self.loading_row.display = False
        self.set_interval(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        if not self.display:
            return
        for row in [self.loading_row, *self.rows.values()]:
            if row.display:
                row.tick()

    def reset(self) -> None:
        """Forget the rows of earlier requests (a new request starts)."""
        for row in self.rows.values():
            row.remove()
        self.rows = {}
        self.loading_row.display = False
        self.display = False

    def show_stage(self, stage: Any, elapsed: float) -> None:
        """The model's loading reached `stage`, `elapsed` seconds after the request began."""
        self.loading_row.show_stage(stage, elapsed)
        self.loading_row.display = True
        self.display = True

    def request_ended(self, outcome: str) -> None:
        """The request ended: a load it did not finish and runs it did not start say so."""
        if outcome == "complete":
            return
        for row in [self.loading_row, *self.rows.values()]:
            if row.display:
                row.stop(outcome)

    def show_planned(self, planned: list[Any]) -> None:
        """A waiting row for every run of a request (the model loads before the first batch)."""
        for item in planned:
            if item.run_id not in self.rows:
                row = ProgressRow(f"{item.dataset}/{item.response_type}")
                self.rows[item.run_id] = row
                self.mount(row)
        self.display = bool(self.rows) or self.loading_row.display

    def show_progress(self, progress: Any) -> None:
        row = self.rows.get(progress.run_id)
        if row is None:
            row = ProgressRow(f"{progress.dataset}/{progress.response_type}")
            self.rows[progress.run_id] = row
            self.mount(row)
        row.show(progress)
        if progress.samples_per_second or progress.status != "running":
            self.loading_row.display = False  # a batch landed (or a run ended): loaded
        self.display = True
