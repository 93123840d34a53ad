"""The Runs tab: the runs browser, and below it the highlighted run's id and settings.

Why a detail line: two runs of the same model, data and response type differ only in how they
were computed (dtype, sample limit, max length, modules, device), and the tree's one line per
run has no room for that at 80 columns; nor for the full id a user copies into
`layerscope export`. The line follows the tree's cursor, and is redrawn when a scan of the cache
brings new counts or a finished run's computing time. Its counts are of what the run's request
asked for, and say how many the data file holds when that is more (`--limit`), with a running
run's rate and ETA as the browser tells them from its scans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Static, Tree

from layerscope.app.labels import full_label, run_settings
from layerscope.app.tui.widgets.runs.runs_browser import run_counts

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from layerscope.analysis.base.records import RunInfo
    from layerscope.analysis.runs.pace import Pace
    from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser

NO_RUN_HIGHLIGHTED = "Move the cursor onto a run to see its id and settings."


def run_detail(run: RunInfo | None, pace: Pace | None = None) -> Text:
    """Four lines: the run's full name, its id (whole, to copy), how it was computed, and its
    samples (of those requested, of the file's, and a running run's `pace`)."""
    if run is None:
        return Text(NO_RUN_HIGHLIGHTED, style="italic")
    text = Text()
    text.append(full_label(run), style="bold")
    text.append(f" · {run.status}\n")
    text.append("id ", style="dim")
    text.append(f"{run.id}\n")
    text.append("settings: ", style="dim")
    text.append((run_settings(run) or "not recorded") + "\n")
    text.append("samples: ", style="dim")
    text.append(run_counts(run, pace, of_file=True))
    return text


class RunsPane(Vertical):
    """Holds the runs browser it is given and the detail line of its highlighted run."""

    def __init__(self, browser: RunsBrowser, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.browser = browser

    def compose(self) -> ComposeResult:
        yield self.browser
        yield Static(run_detail(None), id="run-detail")

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        # Not stopped: the App hears of the focused run too (the browser posts RunFocused).
        run_id = event.node.data
        run = next((run for run in self.browser.runs if run_id and run.id == run_id), None)
        pace = self.browser.paces.get(run.id) if run is not None else None
        self.query_one("#run-detail", Static).update(run_detail(run, pace))
