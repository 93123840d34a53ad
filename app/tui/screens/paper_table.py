"""The paper's table on screen (T in the Chart tab): rows model x mode, columns response types,
cells the MAD over all, early, middle and late layers.

Why a screen of its own: the comparison table under the chart lists runs one per row, which
suits two or three runs; the paper compares models and modes across response types, and that
layout is what a researcher copies into a paper. The text is the Markdown the export writes
(``layerscope table`` draws the same), so what is read here is what the file holds; it scrolls
both ways rather than wrapping, because a wrapped table cannot be read.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class PaperTableScreen(ModalScreen[None]):
    """The table's Markdown text, scrollable; escape, q or T closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,T", "close", "Close the table", id="paper_table.close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with ScrollableContainer(id="paper-table-dialog", classes="dialog"):
            yield Label(f"{self.title_text} (escape closes)", classes="dialog-title")
            yield Static(Text(self.text, no_wrap=True), id="paper-table-text")

    def action_close(self) -> None:
        self.dismiss(None)
