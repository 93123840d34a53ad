"""One sample's layer-wise curve drawn over its run's mean (the sample detail view).

Shows at a glance whether a hard sample is hard everywhere or only in some layers. The screen
that shows it says whether the theme is dark (the colours of the two curves depend on it). The
two curves differ by marker too (the run's mean in dots, the sample in braille), named in a
legend line above the figure, so they are told apart where colour is lost (NO_COLOR, exports).
"""

from __future__ import annotations

import math

from rich.text import Text

from layerscope.app.tui.widgets.plotext_chart import (
    PlotextChart,
    layer_ticks,
    marker_legend,
    shorten,
)

SAMPLE_MARKER = "braille"
MEAN_MARKER = "•"


class SampleChart(PlotextChart):
    """Two curves over layers: the sample and the run's mean."""

    def __init__(self, *, dark: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dark = dark
        self.sample: list[float] = []
        self.mean: list[float] = []
        self.title = ""
        self.placeholder = "Loading the sample's curve…"

    def show(self, sample: list[float], mean: list[float], title: str) -> None:
        self.sample = sample
        self.mean = mean
        self.title = title
        self.replot()

    def set_dark(self, dark: bool) -> None:
        self.dark = dark
        self.replot()

    def empty_message(self) -> str | None:
        return None if self.sample else self.placeholder

    def _curves(self) -> tuple[tuple[list[float], str, str, str], ...]:
        """(values, label, colour, marker) of the run's mean and of the sample."""
        dark = self.dark
        return (
            (self.mean, "run mean", "gray+" if dark else "gray", MEAN_MARKER),
            (self.sample, "this sample", "red+" if dark else "red", SAMPLE_MARKER),
        )

    def header(self, width: int) -> Text | None:
        """The legend: which marker is the sample and which the run's mean."""
        return marker_legend(((m, c, label) for v, label, c, m in self._curves() if v), width)

    def plot(self) -> None:
        figure = self.plt
        figure.theme("clear")
        width, _ = self.figure_size
        figure.title(shorten(self.title, width - 4))
        # The mean first, so that the sample is drawn on top of it.
        for values, _label, colour, marker in self._curves():
            points = [(layer, v) for layer, v in enumerate(values) if math.isfinite(v)]
            if points:
                figure.plot(
                    [p[0] for p in points], [p[1] for p in points], color=colour, marker=marker
                )
        layers = max(len(self.sample), len(self.mean))
        if layers:
            figure.xticks(layer_ticks(list(range(layers)), width - 8))
        figure.xlabel("layer")
