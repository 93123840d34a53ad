"""A run's samples as points: one per-sample statistic against response length or loss.

Why: the follow-up paper relates a sample's gradients to what it is (long reasoning answers
have smaller norms; hard samples a higher loss); a table sorted by one column shows the
extremes, a scatter shows the trend and its outliers at once. The samples marked in the table
are drawn with their own glyph and named in the legend, so they stay apart without colour
(NO_COLOR, tmux, plain SSH).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

from layerscope.app.tui.widgets.plotext_chart import PlotextChart, marker_legend, shorten

OTHER_MARKER = "•"
MARKED_MARKER = "●"


class SampleScatter(PlotextChart):
    """Points (x, y) of samples; `marked` ones drawn with MARKED_MARKER."""

    can_focus = True  # it stands in for the table: the Samples tab's keys reach its pane

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.points: list[tuple[int, float, float]] = []  # (sample index, x, y)
        self.marked: set[int] = set()
        self.title = ""
        self.x_label = ""
        self.placeholder = "Loading the samples…"

    def show(
        self,
        points: Sequence[tuple[int, float, float]],
        marked: set[int],
        title: str,
        x_label: str,
    ) -> None:
        self.points = [(i, x, y) for i, x, y in points if math.isfinite(x) and math.isfinite(y)]
        self.marked = set(marked)
        self.title = title
        self.x_label = x_label
        self.placeholder = "No sample has both values to draw." if points else self.placeholder
        self.replot()

    def empty_message(self) -> str | None:
        return None if self.points else self.placeholder

    def _groups(self) -> tuple[tuple[list[tuple[int, float, float]], str, str, str], ...]:
        """(points, label, colour, marker) of the unmarked and the marked samples."""
        marked = [p for p in self.points if p[0] in self.marked]
        others = [p for p in self.points if p[0] not in self.marked]
        return (
            (others, f"{len(others)} samples", "cyan", OTHER_MARKER),
            (marked, f"{len(marked)} marked", "red", MARKED_MARKER),
        )

    def header(self, width: int) -> Text | None:
        return marker_legend(((m, c, label) for p, label, c, m in self._groups() if p), width)

    def plot(self) -> None:
        figure = self.plt
        figure.theme("clear")
        width, _ = self.figure_size
        figure.title(shorten(self.title, width - 4))
        for points, _label, colour, marker in self._groups():  # marked last: on top
            if points:
                figure.scatter(
                    [p[1] for p in points], [p[2] for p in points], color=colour, marker=marker
                )
        figure.xlabel(self.x_label)
