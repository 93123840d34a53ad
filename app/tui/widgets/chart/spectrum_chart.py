"""A run's singular-value spectra, layer by layer, on log-log axes (the Chart tab's w view).

Why log-log, one series per layer: heavy-tailed spectra (WeightWatcher's view of weights) are
straight lines there, and how the head and the tail move with depth is the question; each layer
has its own marker glyph, named in the legend above the chart, so the layers stay apart
without colour (NO_COLOR, tmux). What is drawn is the mean over samples of the k-th largest
singular value against k (:mod:`layerscope.analysis.results.spectra` says why); values <= 0 cannot be
drawn on log axes and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text

from layerscope.app.palettes import SERIES_COLOURS, SERIES_MARKERS
from layerscope.app.tui.widgets.plotext_chart import PlotextChart, marker_legend, shorten

if TYPE_CHECKING:
    from layerscope.analysis.results.spectra import LayerSpectrum


class SpectrumChart(PlotextChart):
    """Mean singular value by rank of up to eight layers of one run and projection."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spectra: list[LayerSpectrum] = []
        self.title = ""
        self.placeholder = "Loading the spectra…"

    def show(self, spectra: Sequence[LayerSpectrum], title: str, placeholder: str) -> None:
        self.spectra = list(spectra)
        self.title = title
        self.placeholder = placeholder
        self.replot()

    def _points(self, spectrum: LayerSpectrum) -> tuple[list[float], list[float]]:
        pairs = [
            (float(rank), mean)
            for rank, mean in zip(spectrum.ranks, spectrum.means, strict=True)
            if math.isfinite(mean) and mean > 0
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def empty_message(self) -> str | None:
        if any(self._points(s)[0] for s in self.spectra):
            return None
        return self.placeholder

    def header(self, width: int) -> Text | None:
        entries = (
            (
                SERIES_MARKERS[number % len(SERIES_MARKERS)],
                SERIES_COLOURS[number % len(SERIES_COLOURS)],
                f"layer {spectrum.layer}",
            )
            for number, spectrum in enumerate(self.spectra)
        )
        return marker_legend(entries, width)

    def plot(self) -> None:
        figure = self.plt
        figure.theme("clear")
        width, _ = self.figure_size
        figure.title(shorten(self.title, width - 4))
        for number, spectrum in enumerate(self.spectra):
            xs, ys = self._points(spectrum)
            if xs:
                figure.plot(
                    xs,
                    ys,
                    color=SERIES_COLOURS[number % len(SERIES_COLOURS)],
                    marker=SERIES_MARKERS[number % len(SERIES_MARKERS)],
                )
        figure.xscale("log")
        figure.yscale("log")
        from layerscope.app.charts import decade_ticks  # imports plotext: only when drawn

        ticks = decade_ticks([v for s in self.spectra for v in s.means])
        if ticks:
            figure.yticks(*ticks)
        figure.xlabel("rank")
