"""Ask where to export what is on screen (the chart as text, the tables as CSV).

Why the dialog writes: a folder that cannot be used (none typed, a file, not writable, a write
that fails) is said in the dialog itself, naming the folder and the reason, and the dialog stays
open with what was typed so it can be corrected; a notification after the dialog had closed
made the user open it and type the folder again. Nothing is written until the folder passed its
check, and each file appears whole or not at all (app/tui/export.py).
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
            yield Static("enter: export · escape: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        from layerscope.analysis.base.outputs import OutputError

        event.stop()
        problem = folder_problem(event.value)
        if problem is None:
            folder = Path(event.value.strip()).expanduser()
            try:
                written = self.write(folder)
            except OutputError as error:
                problem = f"not exported: {error}"
            except OSError as error:  # creating the folder failed
                problem = f"not exported: folder {folder}: {error.strerror or error}"
            else:
                self.dismiss(written)
                return
        # Marked, not only coloured: legible without colour (NO_COLOR, plain SSH).
        self.query_one("#export-problem", Static).update(f"✗ {problem}")
        self.query_one("#export-problem", Static).display = True

    def on_mount(self) -> None:
        self.query_one("#export-problem", Static).display = False

    def action_cancel(self) -> None:
        self.dismiss(None)
