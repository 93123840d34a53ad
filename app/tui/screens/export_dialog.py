"""Ask where to export what is on screen (the chart as text, the tables as CSV).

Why the dialog writes: a folder that cannot be used (none typed, a file, not writable, a write
that fails) is said in the dialog itself, naming the folder and the reason, and the dialog stays
open with what was typed so it can be corrected; a notification after the dialog had closed
made the user open it and type the folder again. Nothing is written until the folder passed its
check, and each file appears whole or not at all (app/tui/export.py).

The write runs in a thread worker, never on the UI thread: exporting marked samples reads the
cache and the run's data file, and a figure is drawn by matplotlib; either can take seconds on a
study-sized cache or a slow disk, and keys must not wait on them. The dialog says "writing…"
meanwhile; the worker reports with :class:`ExportWritten`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from layerscope.app.tui.export import folder_problem
from layerscope.app.tui.messages import ExportWritten

Write = Callable[[Path], list[Path]]


class ExportDialog(ModalScreen[list[Path] | None]):
    """Writes with `write(folder)` on enter and returns the paths written; None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="export.cancel")
    ]

    def __init__(self, what: str, folder: str, write: Write) -> None:
        super().__init__()
        self.what = what
        self.folder = folder
        self.write = write

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label("Export", classes="dialog-title")
            yield Static(
                f"Writes {self.what} into this folder (created if needed):", classes="hint"
            )
            yield Input(value=self.folder, id="export-folder")
            yield Static("", id="export-problem", classes="error")
            yield Static("", id="export-status", classes="hint")
            yield Static("enter: export · escape: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = folder_problem(event.value)
        if problem is not None:
            self._say(f"✗ {problem}")  # marked, not only coloured: legible without colour
            return
        folder = Path(event.value.strip()).expanduser()
        field = self.query_one("#export-folder", Input)
        field.disabled = True  # one write at a time; enabled again if it fails
        self.query_one("#export-problem", Static).display = False
        self._status(f"writing into {folder}…")
        self.run_worker(
            lambda: self._write_in_worker(folder),
            thread=True,
            exclusive=True,
            group="export",
            name="export",
        )

    def _write_in_worker(self, folder: Path) -> None:
        """The write itself (a thread worker): what happened goes back as a message."""
        from layerscope.analysis.base.outputs import OutputError

        try:
            written = self.write(folder)
        except OutputError as error:
            self.post_message(ExportWritten(problem=f"not exported: {error}"))
        except OSError as error:  # creating the folder failed
            reason = error.strerror or error
            self.post_message(ExportWritten(problem=f"not exported: folder {folder}: {reason}"))
        else:
            self.post_message(ExportWritten(paths=written))

    def on_export_written(self, message: ExportWritten) -> None:
        message.stop()
        if message.problem is None:
            self.dismiss(message.paths)
            return
        self._status("")
        self._say(f"✗ {message.problem}")
        field = self.query_one("#export-folder", Input)
        field.disabled = False
        field.focus()

    def _status(self, text: str) -> None:
        status = self.query_one("#export-status", Static)
        status.update(text)
        status.display = bool(text)

    def _say(self, text: str) -> None:
        problem = self.query_one("#export-problem", Static)
        problem.update(text)
        problem.display = True

    def on_mount(self) -> None:
        self.query_one("#export-problem", Static).display = False
        self.query_one("#export-status", Static).display = False

    def action_cancel(self) -> None:
        self.dismiss(None)
