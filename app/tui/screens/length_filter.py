"""Ask for a response-length range (in tokens) to restrict the compared samples to.

Nuclear norm and rank grow with response length, so comparing fast and slow thinking fairly
needs samples of similar length; this small dialog sets that filter ("50-200", "100-", "-80",
or empty for all).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from layerscope.app.tui.format import format_length_range, parse_length_range

__all__ = ["LengthFilterScreen", "format_length_range", "parse_length_range"]


class LengthFilterScreen(ModalScreen[tuple[int, int] | None | bool]):
    """Returns the range, None to clear it, or False when dismissed without a change."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="length.cancel")
    ]

    def __init__(self, current: tuple[int, int] | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Response length filter (tokens)", classes="dialog-title")
            yield Static("e.g. 50-200, 100- or -80; empty shows all samples", classes="hint")
            yield Input(
                value=format_length_range(self.current), placeholder="all", id="length-input"
            )
            yield Static("", id="length-error", classes="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = parse_length_range(event.value)
        except ValueError as error:
            self.query_one("#length-error", Static).update(str(error))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(False)
