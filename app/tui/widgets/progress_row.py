"""One response type's progress: a bar with samples done and total, speed, ETA, mean loss."""

from __future__ import annotations

import math
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar, Static

STATUS_TEXT = {
    "running": "",
    "cached": " · already cached",
    "complete": " · done",
    "cancelled": " · cancelled (kept)",
    "failed": " · failed",
}


def format_duration(seconds: float | None) -> str:
    """12s, 3m04s, 1h02m: an ETA that reads at a glance."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def progress_details(progress: Any) -> str:
    """'12/40 · 3.1/s · ETA 9s · loss 2.310' from a RunProgress."""
    parts = [f"{progress.done}/{progress.total}"]
    if progress.status == "running":
        if progress.samples_per_second:
            parts.append(f"{progress.samples_per_second:.1f}/s")
            parts.append(f"ETA {format_duration(progress.eta_seconds)}")
        else:
            parts.append("starting…")
    if progress.mean_loss is not None and math.isfinite(progress.mean_loss):
        parts.append(f"loss {progress.mean_loss:.3f}")
    for count, what in (
        (getattr(progress, "skipped", 0), "skipped"),
        (getattr(progress, "failed", 0), "failed"),
    ):
        if count:
            parts.append(f"{count} {what}")
    return " · ".join(parts) + STATUS_TEXT.get(progress.status, f" · {progress.status}")


class ProgressRow(Horizontal):
    """Label, bar, details; updated in place as batches land."""

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="progress-row")
        self.title = title
        self.progress: Any = None

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="progress-title")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False)
        yield Static("waiting…", classes="progress-details")

    def on_mount(self) -> None:
        if self.progress is not None:
            self._apply()

    def show(self, progress: Any) -> None:
        """Show this progress now, or as soon as the row is mounted."""
        self.progress = progress
        if self.is_mounted and self.children:
            self._apply()

    def _apply(self) -> None:
        progress = self.progress
        bar = self.query_one(ProgressBar)
        bar.update(total=max(progress.total, 1), progress=progress.done)
        self.query_one(".progress-details", Static).update(progress_details(progress))
        self.set_class(progress.status == "failed", "-failed")
        self.set_class(progress.status in ("complete", "cached"), "-complete")
