"""Choosing, inside the Samples and Cosines tabs, which of the overlaid runs they show.

Why: with three runs overlaid in the chart, a user who wants the samples or the heatmap of the
second one used to go back to the Runs tab and find it there. Both tabs now step through the
overlaid runs with a key (n, N backwards) and say which one they show and its place in the
list. These are the parts the two tabs share: the keys, the step and the words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.binding import Binding
from textual.widget import Widget

from layerscope.app.labels import ID_PREFIX, full_label
from layerscope.app.tui.messages import RunFocused

NOTHING_OVERLAID = "No runs overlaid: mark runs in the Runs tab (space) to choose among them."


class OverlaidRunChoice(Widget):
    """Base of a tab that shows one of the chart's runs: it keeps `overlaid` (the App sets it)
    and `run_id` (the one shown), and n/N step through the overlaid runs. The App hears of a
    step (RunFocused), so that the other such tab follows."""

    overlaid: list[str]
    run_id: str | None

    def show_run(self, run_id: str | None, refresh: bool = False) -> None:
        raise NotImplementedError

    def _update_status(self) -> None:
        raise NotImplementedError

    def set_overlaid(self, run_ids: list[str]) -> None:
        """The runs overlaid in the chart (owned by the App): what n chooses among."""
        self.overlaid = list(run_ids)
        self._update_status()

    def action_cycle_run(self, step: int) -> None:
        """Show the next (or previous) overlaid run, and tell the App."""
        chosen = stepped(self.overlaid, self.run_id, step)
        if chosen is None:
            self.notify(NOTHING_OVERLAID, severity="warning")
            return
        self.show_run(chosen)
        self.post_message(RunFocused(chosen))


def run_choice_bindings(area: str) -> list[Binding]:
    """n and N, with ids under `area` ("samples", "cosines")."""
    return [
        Binding(
            "n",
            "cycle_run(1)",
            "Next run",
            tooltip="Show the next of the runs overlaid in the chart (N: the previous one)",
            id=f"{area}.next_run",
        ),
        Binding("N", "cycle_run(-1)", "Previous run", show=False, id=f"{area}.previous_run"),
    ]


def stepped(overlaid: Sequence[str], current: str | None, step: int) -> str | None:
    """The overlaid run `step` places after `current`; the first one when `current` is not
    overlaid (None when nothing is)."""
    if not overlaid:
        return None
    if current is None or current not in overlaid:
        return overlaid[0] if step > 0 else overlaid[-1]
    return overlaid[(list(overlaid).index(current) + step) % len(overlaid)]


def run_name(run_id: str, runs_by_id: Mapping[str, Any], overlaid: Sequence[str]) -> str:
    """The run's full label; with its id prefix when another overlaid run has the same label
    (runs that differ only in their settings)."""
    run = runs_by_id.get(run_id)
    if run is None:
        return run_id[:12]
    label = full_label(run)
    twins = [
        other
        for other in overlaid
        if other != run_id and other in runs_by_id and full_label(runs_by_id[other]) == label
    ]
    return f"{label} #{run_id[:ID_PREFIX]}" if twins else label


def place(run_id: str, overlaid: Sequence[str]) -> str:
    """Where the shown run is among the overlaid ones, and how to change it."""
    if run_id in overlaid:
        if len(overlaid) == 1:
            return "the one run overlaid"
        return f"run {list(overlaid).index(run_id) + 1}/{len(overlaid)} (n: next)"
    if overlaid:
        return "not overlaid (n: the overlaid runs)"
    return "not overlaid"
