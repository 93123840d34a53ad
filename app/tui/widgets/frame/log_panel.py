"""The log panel: every error and notable event of the session, kept for reading later.

Notifications vanish after a few seconds; a user who looked away (or is inside tmux in another
window) finds here what failed, with the full one-line message (out of memory, a bad sample, a
model that does not load).
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import RichLog

SEVERITY_STYLES = {"error": "bold red", "warning": "yellow", "information": "green"}


class LogPanel(RichLog):
    """A RichLog with a severity-tagged `record` and the lines kept for export."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=5000)
        self.lines_recorded: list[str] = []

    def record(self, message: str, severity: str = "information") -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        line = Text.assemble(
            (stamp + " ", "dim"),
            (f"{severity:<11} ", SEVERITY_STYLES.get(severity, "")),
            message,
        )
        self.lines_recorded.append(f"{stamp} {severity} {message}")
        self.write(line)
