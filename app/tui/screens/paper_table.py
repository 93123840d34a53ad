"""The paper's table on screen (T in the Chart tab): rows model x mode, columns response types,
cells the MAD over all, early, middle and late layers.

Why a screen of its own: the comparison table under the chart lists runs one per row, which
suits two or three runs; the paper compares models and modes across response types, and that
layout is what a researcher copies into a paper. The text is the Markdown the export writes
(``layerscope table`` draws the same), so what is read here is what the file holds, its columns
aligned, never wrapped (a wrapped or squeezed table cannot be read): it scrolls sideways.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer
from textual.screen import ModalScreen
from textual.widgets import Label, Static


def aligned(markdown: str) -> str:
    """Markdown tables as aligned columns (numbers to the right), other lines as they are."""
    lines = markdown.splitlines()
    out: list[str] = []
    block: list[list[str]] = []

    def flush() -> None:
        if not block:
            return
        rows = [row for row in block if not all(set(cell) <= set("-: ") for cell in row)]
        widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
        for number, row in enumerate(rows):
            cells = [
                cell.ljust(widths[i]) if number == 0 or i < 3 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ]
            out.append("  ".join(cells).rstrip())
            if number == 0:
                out.append("  ".join("─" * width for width in widths))
        block.clear()

    for line in lines:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


class PaperTableScreen(ModalScreen[None]):
    """The table's Markdown, drawn; escape, q or T closes."""

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
            yield Static(Text(aligned(self.text), no_wrap=True), id="paper-table-text")

    def action_close(self) -> None:
        self.dismiss(None)
