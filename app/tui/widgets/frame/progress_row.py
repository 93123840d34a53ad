"""One line of progress: a response type's samples (done, total, elapsed, tokens per second, ETA,
device memory in use, mean loss) or, before the first batch, the model's loading stage (with a
determinate bar for the weights).

Why the loading stage is a row like the others: on a 7B model loading takes minutes, and a user
who sees only pulsing bars cannot tell a slow load from a hung one; the same line that will show
the samples says what is being loaded, how far and for how long.
"""

from __future__ import annotations

import math
import time
from dataclasses import is_dataclass, replace
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar, Static

from layerscope.app.labels import duration
from layerscope.app.tui.format import format_duration

STATUS_TEXT = {
    "running": "",
    "cached": "already cached",
    "complete": "done",
    "cancelled": "cancelled (kept)",
    "failed": "failed",
}
ENDED = ("complete", "cancelled", "failed")


def clock() -> float:
    """The rows' clock (monotonic seconds): one name a test can set, not the event loop's."""
    return time.monotonic()


def progress_details(
    progress: Any, elapsed: float | None = None, eta_seconds: float | None = None
) -> str:
    """'12/40 in 4.1 s · 3.1/s · ETA 9s · loss 2.310' from a RunProgress (and its elapsed time;
    ``eta_seconds``: the time left now, when it has run down since the progress was measured).

    The elapsed time and how the run ended ('40/40 in 9.8 s · done · loss ...') come first: at
    80 columns the end of the line is cut, and without colour the words are all there is.
    """
    parts = [f"{progress.done}/{progress.total}"]
    if elapsed is not None:
        parts[0] += f" in {duration(elapsed)}"
    if progress.status != "running":
        parts.append(STATUS_TEXT.get(progress.status, progress.status))
    else:
        if progress.samples_per_second:
            tokens = getattr(progress, "tokens_per_second", 0.0)
            # Tokens per second say the throughput when lengths vary; samples/s when unknown.
            parts.append(token_rate(tokens) if tokens else f"{progress.samples_per_second:.1f}/s")
            left = progress.eta_seconds if eta_seconds is None else eta_seconds
            parts.append(f"ETA {format_duration(left)}")
            memory = memory_text(progress)
            if memory:
                parts.append(memory)
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
    return " · ".join(parts)


def token_rate(tokens_per_second: float) -> str:
    """'850 tok/s', '12.3k tok/s'."""
    if tokens_per_second >= 1000:
        return f"{tokens_per_second / 1000:.1f}k tok/s"
    return f"{tokens_per_second:.0f} tok/s"


def memory_text(progress: Any) -> str:
    """'3.1G' of device memory in use (torch's on CUDA), 'rss 3.1G' on a CPU (the process's);
    '' where the run cannot tell."""
    in_use = getattr(progress, "memory_bytes", None)
    if in_use is None:
        return ""
    prefix = "rss " if getattr(progress, "memory_kind", "") == "rss" else ""
    return f"{prefix}{in_use / 2**30:.1f}G"


def stage_details(stage: Any, elapsed: float) -> str:
    """'3.2 s · loading weights 12/36' from a LoadStage and the seconds since the request began.

    The time comes first: at 80 columns a long description is cut at the end.
    """
    text = stage.description
    if stage.done is not None and stage.total:
        text += f" {stage.done}/{stage.total}"
    return f"{duration(elapsed)} · {text}"


class ProgressRow(Horizontal):
    """Label, bar, details; updated in place as batches land (or as loading goes on)."""

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="progress-row")
        self.title = title
        self.progress: Any = None
        self.stage: Any = None
        self._started: float | None = None  # monotonic time the run (or request) began
        self._measured: float | None = None  # monotonic time the progress shown arrived
        self._ended_after: float | None = None  # seconds it took, once it ended

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="progress-title")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False)
        yield Static("waiting…", classes="progress-details")

    def on_mount(self) -> None:
        if self.progress is not None or self.stage is not None:
            self._apply()

    @property
    def running(self) -> bool:
        """Whether its elapsed time still grows (a running run, a loading stage)."""
        if self.stage is not None:
            return True
        return self.progress is not None and self._started is not None and self._ended_after is None

    def show(self, progress: Any) -> None:
        """Show this progress now, or as soon as the row is mounted."""
        now = clock()
        if progress.status == "running" and self._started is None:
            self._started = now
        elif progress.status in ENDED and self._started is not None:
            self._ended_after = self._ended_after or now - self._started
        self.progress = progress
        self._measured = now
        self.stage = None
        if self.is_mounted and self.children:
            self._apply()

    def show_stage(self, stage: Any, elapsed: float) -> None:
        """Show a loading stage reached `elapsed` seconds after the request began."""
        self._started = clock() - elapsed
        self.stage = stage
        if self.is_mounted and self.children:
            self._apply()

    def stop(self, outcome: str) -> None:
        """The request ended (`outcome`) before this row's run or loading step finished.

        A loading row says at which step and when; a run that never started says so. Neither
        ticks on: a failed load must not look like one still going.
        """
        if self.stage is not None:
            elapsed = self._elapsed() or 0.0
            self._ended_after = elapsed
            text = f"{outcome} after {duration(elapsed)} · {self.stage.description}"
            self.stage = None
            self.set_class(outcome == "failed", "-failed")
            if self.is_mounted and self.children:
                self.query_one(ProgressBar).update(total=1, progress=0)
                self.query_one(".progress-details", Static).update(text)
        elif self.progress is None:
            if self.is_mounted and self.children:
                self.query_one(ProgressBar).update(total=1, progress=0)
                self.query_one(".progress-details", Static).update(f"not started ({outcome})")
        elif self.running and is_dataclass(self.progress) and not isinstance(self.progress, type):
            self.show(replace(self.progress, status=outcome))  # ended without saying so

    def tick(self) -> None:
        """Redraw the elapsed time (called every second while running)."""
        if self.running and self.is_mounted and self.children:
            self._apply()

    def _eta_now(self) -> float | None:
        """The time left, run down every second since the progress was measured (a batch can
        take long: the ETA froze at its last value until the next one landed); never below 0."""
        eta = getattr(self.progress, "eta_seconds", None)
        if eta is None or self._measured is None or self.progress.status != "running":
            return None
        return max(0.0, eta - (clock() - self._measured))

    def _elapsed(self) -> float | None:
        if self._ended_after is not None:
            return self._ended_after
        return None if self._started is None else clock() - self._started

    def _apply(self) -> None:
        bar = self.query_one(ProgressBar)
        details = self.query_one(".progress-details", Static)
        stage = self.stage
        if stage is not None:
            if stage.done is not None and stage.total:
                bar.update(total=stage.total, progress=stage.done)
            else:
                bar.update(total=None)  # a step that cannot tell how far it is: pulses
            details.update(stage_details(stage, self._elapsed() or 0.0))
            return
        progress = self.progress
        bar.update(total=max(progress.total, 1), progress=progress.done)
        text = progress_details(progress, self._elapsed(), self._eta_now())
        details.update(text)
        details.tooltip = text  # the whole line where 80 columns cut its end
        self.set_class(progress.status == "failed", "-failed")
        self.set_class(progress.status in ("complete", "cached"), "-complete")
