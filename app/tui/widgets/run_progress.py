"""The progress panel: one row per response type being computed, docked above the footer.

Visible from every tab, so a user can watch the chart grow while the bars advance; it hides
itself when nothing has run in this session.
"""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical

from layerscope.app.tui.widgets.progress_row import ProgressRow


class RunProgressPanel(Vertical):
    """Rows keyed by run id, in the order the runs started."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: dict[str, ProgressRow] = {}

    def reset(self) -> None:
        """Forget the rows of earlier requests (a new request starts)."""
        for row in self.rows.values():
            row.remove()
        self.rows = {}
        self.display = False

    def show_planned(self, planned: list[Any]) -> None:
        """A waiting row for every run of a request (the model loads before the first batch)."""
        for item in planned:
            if item.run_id not in self.rows:
                row = ProgressRow(f"{item.dataset}/{item.response_type}")
                self.rows[item.run_id] = row
                self.mount(row)
        self.display = bool(self.rows)

    def show_progress(self, progress: Any) -> None:
        row = self.rows.get(progress.run_id)
        if row is None:
            row = ProgressRow(f"{progress.dataset}/{progress.response_type}")
            self.rows[progress.run_id] = row
            self.mount(row)
        row.show(progress)
        self.display = True
