"""One sample's layer-wise curve drawn over its run's mean (the sample detail view).

Shows at a glance whether a hard sample is hard everywhere or only in some layers. The screen
that shows it says whether the theme is dark (the colours of the two curves depend on it).
"""

from __future__ import annotations

import math

from layerscope.app.tui.widgets.plotext_chart import PlotextChart


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

    def plot(self) -> None:
        dark = self.dark
        figure = self.plt
        figure.theme("clear")
        figure.title(self.title)
        for values, label, colour in (
            (self.mean, "run mean", "gray+" if dark else "gray"),
            (self.sample, "this sample", "red+" if dark else "red"),
        ):
            points = [(layer, v) for layer, v in enumerate(values) if math.isfinite(v)]
            if points:
                figure.plot(
                    [p[0] for p in points], [p[1] for p in points], color=colour, label=label
                )
        layers = max(len(self.sample), len(self.mean))
        if layers:
            width = self.content_size.width or 60
            step = max(1, math.ceil(layers * 4 / max(width - 10, 8)))
            figure.xticks(list(range(0, layers, step)))
        figure.xlabel("layer")
