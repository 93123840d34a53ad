"""A layer-by-layer cosine similarity heatmap with a keyboard cursor.

Colour alone is not readable everywhere (16-colour terminals, colour-blind users, NO_COLOR), so
every cell also carries a shade character for its value band, and the cell under the cursor is
spelled out below the map ("layer 3 x layer 7: 0.812"). The map takes the room it has: cells
grow (about twice as wide as tall, so that they look square) until the map fills the panel's
width or height, layer numbers label the columns once the cells are wide enough for them, and
rows are halved with half blocks only when the map would not fit otherwise.
"""

from __future__ import annotations

import math
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widget import Widget

# Value bands from -1 to 1: shade character and a diverging blue-white-red colour (xterm-256).
_BANDS = (
    (-0.5, "=", 19),
    (-0.1, "-", 27),
    (0.1, "·", 250),
    (0.3, ":", 222),
    (0.5, "░", 215),
    (0.7, "▒", 209),
    (0.9, "▓", 202),
    (math.inf, "█", 196),
)


def cell_layout(size: int, width: int, height: int) -> tuple[int, int, bool]:
    """Characters per cell, lines per matrix row, and whether two rows share a line (half
    blocks), for a `size` x `size` map in `width` x `height` (row labels, the title, column
    labels, legend and cursor lines included)."""
    label_width = len(str(size - 1)) + 1
    widest = max(1, (width - label_width) // size)
    tallest = (height - 4) // size  # title, column labels, legend, cursor line
    if tallest < 1:  # two rows a line: a cell one or two characters wide
        return (min(widest, 2), 1, True)
    lines = max(1, min(tallest, widest // 2))
    return (max(1, min(widest, 2 * lines)), lines, False)


def band_of(value: float) -> tuple[str, int]:
    """Shade character and colour code of a cosine value."""
    if not math.isfinite(value):
        return ("?", 244)
    for upper, shade, colour in _BANDS:
        if value < upper:
            return (shade, colour)
    return ("█", 196)


class CosineHeatmap(Widget, can_focus=True):
    """Renders an L x L matrix; arrow keys move the cursor over cells."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1, 0)", "Up", show=False, id="heatmap.up"),
        Binding("down", "move(1, 0)", "Down", show=False, id="heatmap.down"),
        Binding("left", "move(0, -1)", "Left", show=False, id="heatmap.left"),
        Binding("right", "move(0, 1)", "Right", show=False, id="heatmap.right"),
    ]

    cursor: reactive[tuple[int, int]] = reactive((0, 0))

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.matrix: list[list[float]] = []
        self.title = ""
        self.placeholder = "No run chosen: pick one in the Runs tab (h)."

    def show(self, matrix: list[list[float]], title: str) -> None:
        self.matrix = matrix
        self.title = title
        size = len(matrix)
        row, column = self.cursor
        self.cursor = (min(row, max(size - 1, 0)), min(column, max(size - 1, 0)))
        self.refresh()

    def action_move(self, rows: int, columns: int) -> None:
        size = len(self.matrix)
        if not size:
            return
        row, column = self.cursor
        self.cursor = (max(0, min(size - 1, row + rows)), max(0, min(size - 1, column + columns)))

    def watch_cursor(self) -> None:
        self.refresh()

    def render(self) -> RenderResult:
        if not self.matrix:
            return Text(self.placeholder, style="italic")
        size = len(self.matrix)
        width = self.content_size.width or 80
        height = self.content_size.height or 24
        label_width = len(str(size - 1)) + 1
        cell, lines, half_rows = cell_layout(size, width, height)
        text = Text(no_wrap=True, end="")
        text.append(self.title + "\n", style="bold")
        if not half_rows and cell > len(str(size - 1)):
            text.append(" " * label_width)
            for column in range(size):
                text.append(f"{column:^{cell}}", style="dim")
            text.append("\n")
        row_cursor, column_cursor = self.cursor
        step = 2 if half_rows else 1
        for row in range(0, size, step):
            for line in range(lines):
                label = f"{row:>{label_width - 1}} " if line == 0 else " " * label_width
                text.append(label, style="dim")
                self._append_cells(text, row, cell, half_rows)
                text.append("\n")
        text.append(self._legend())
        value = self.matrix[row_cursor][column_cursor]
        text.append(
            f"\nlayer {row_cursor} x layer {column_cursor}: {value:.3f}   (arrows move)",
            style="bold",
        )
        return text

    def _append_cells(self, text: Text, row: int, cell: int, half_rows: bool) -> None:
        """One line of matrix row `row` (and the next one, with half blocks)."""
        size = len(self.matrix)
        row_cursor, column_cursor = self.cursor
        for column in range(size):
            value = self.matrix[row][column]
            shade, colour = band_of(value)
            selected = (row == row_cursor or (half_rows and row + 1 == row_cursor)) and (
                column == column_cursor
            )
            if half_rows:
                lower = self.matrix[row + 1][column] if row + 1 < size else float("nan")
                _, lower_colour = band_of(lower)
                style = Style(color=f"color({colour})", bgcolor=f"color({lower_colour})")
                glyph = "▀" * cell
            else:
                style = Style(color=f"color({colour})")
                glyph = shade * cell
            if selected:
                style = style + Style(reverse=True)
            text.append(glyph, style=style)

    @staticmethod
    def _legend() -> Text:
        legend = Text("scale: ", style="dim")
        for upper, shade, colour in _BANDS:
            bound = "≥.9" if math.isinf(upper) else f"<{upper:.1f}".replace("0.", ".")
            legend.append(shade * 2, style=Style(color=f"color({colour})"))
            legend.append(f"{bound} ", style="dim")
        return legend
