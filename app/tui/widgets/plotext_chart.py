"""A widget that draws a plotext figure, sized to itself, and the legend and tick helpers every
chart of the explorer draws with (the Chart tab's, the samples' scatter, the sample detail's).

textual-plotext is not a dependency, so this is the small part of it we need: every widget owns
its own plotext figure (plotext's module-level figure is shared global state), keeps the data it
draws on itself, and `replot()` clears the figure, calls `plot()` again and refreshes. Rendering
converts plotext's ANSI output with `Text.from_ansi`, so colours follow the terminal's palette
(256 colours at most: fine inside tmux and over plain SSH).

plotext is imported when a figure is first needed (the first chart drawn), not when this module
is imported: the explorer opens on the Setup tab, and importing plotext was a third of its
start-up imports before any chart is shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from layerscope.app.palettes import rich_colour

# What a legend shows for plotext's braille marker (two of the characters a curve is drawn with).
BRAILLE_LEGEND = "⠤⠤"


def marker_glyph(marker: str) -> str:
    """What the legend shows for a plotext marker: two of the characters the curve is drawn with."""
    return BRAILLE_LEGEND if marker == "braille" else marker * 2


def marker_legend(entries: Iterable[tuple[str, str, str]], width: int | None = None) -> Text:
    """One legend line of (marker, colour, label) entries, each label after its marker's
    glyph (colour only adds to it), cut to `width` with an ellipsis when given."""
    legend = Text(no_wrap=True, overflow="ellipsis")
    for marker, colour, label in entries:
        legend.append(f" {marker_glyph(marker)} ", style=rich_colour(colour))
        legend.append(label)
    if width is not None:
        legend.truncate(width, overflow="ellipsis")
    return legend


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def layer_ticks(layers: list[int], plot_width: int) -> list[int]:
    """Every layer as an x tick when the labels fit side by side, else every n-th one."""
    if not layers:
        return []
    label_width = max(len(str(layer)) for layer in layers) + 1
    fitting = max(plot_width // label_width, 1)
    step = max(1, math.ceil(len(layers) / fitting))
    return layers[::step]


class PlotextChart(Widget):
    """Base class: subclasses keep their data on the instance and draw it in `plot()`."""

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._figure_object: Any = None
        self._built: tuple[tuple[int, int], Text] | None = None
        self._figure_dims = (80, 24)  # the figure's size while plot() runs

    @property
    def _figure(self) -> Any:
        """The widget's own plotext figure, made (and plotext imported) on first use."""
        if self._figure_object is None:
            from layerscope.app.compat.plotext import new_figure

            self._figure_object = new_figure()
        return self._figure_object

    @property
    def plt(self) -> Any:
        """The widget's own plotext figure."""
        return self._figure

    @property
    def figure_size(self) -> tuple[int, int]:
        """Width and height (characters) of the figure being drawn, for layout in plot()."""
        return self._figure_dims

    def plot(self) -> None:
        """Draw the widget's data onto `self.plt`; the default draws nothing."""

    def empty_message(self) -> str | None:
        """A line to show instead of a chart, or None when there is something to draw."""
        return None

    def header(self, width: int) -> Text | None:
        """Lines drawn above the figure (a legend, say), or None."""
        return None

    def replot(self) -> None:
        """Redraw from the widget's data: clear the figure, plot, refresh."""
        if self._figure_object is not None:
            self._figure_object.clear_figure()
        self._built = None
        self.refresh()

    def render(self) -> RenderResult:
        message = self.empty_message()
        if message is not None:
            return Text(message, style="italic", justify="center")
        width, height = self.content_size.width, self.content_size.height
        if width < 20 or height < 6:
            return Text("(too small for a chart)", style="italic")
        if self._built is not None and self._built[0] == (width, height):
            return self._built[1]
        text = self._build(width, height)
        self._built = ((width, height), text)
        return text

    def _build(self, width: int, height: int) -> Text:
        header = self.header(width)
        header_lines = 0 if header is None else len(header.plain.split("\n"))
        if header is not None and height - header_lines < 6:
            # a legend keeps only the lines the figure can spare (6 lines is its least)
            header_lines = max(height - 6, 0)
            header = self._cut(header, header_lines) if header_lines else None
        self._figure.clear_figure()
        self._figure.plot_size(width, height - header_lines)
        self._figure_dims = (width, height - header_lines)
        try:
            self.plot()
            ansi = self._figure.build()
        except Exception as error:  # plotext raises on degenerate input; never crash the UI
            return Text(f"(chart could not be drawn: {error})", style="italic")
        figure = Text.from_ansi(ansi.rstrip("\n"), no_wrap=True, end="")
        if header is None:
            return figure
        return Text.assemble(header, "\n", figure, no_wrap=True, end="")

    @staticmethod
    def _cut(header: Text, lines: int) -> Text:
        """The first `lines` lines of a header."""
        return Text("\n", no_wrap=True).join(header.split("\n")[:lines])

    def as_text(self, width: int | None = None, height: int | None = None) -> str:
        """The chart as plain text (for export), at the widget's size unless given."""
        message = self.empty_message()
        if message is not None:
            return message + "\n"
        width = width or max(self.content_size.width, 60)
        height = height or max(self.content_size.height, 20)
        text = self._build(width, height)
        self._built = None
        return "\n".join(line.rstrip() for line in text.plain.splitlines()) + "\n"
