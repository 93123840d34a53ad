"""The layer-wise chart: layer on x, a statistic on y, one panel per projection, runs overlaid.

This is the figure of the paper (one panel per q/k/v/o, fast vs slow thinking overlaid), drawn
with plotext. The widget only draws: curves arrive already aggregated by the cache (mean,
std, 95% interval per layer), so a redraw is cheap enough to follow a live computation. Layers
where a run differs significantly from the baseline (``marks``, from the comparison's tests)
get a ``*`` along the bottom of their panel, legible without colour; the x axis label says
what they mean. The tests take longer than the curves on a big cache, so the marks come on
their own: ``testing`` (the x axis label says "testing…") while they are computed, then
``marks``; both are reactive, and setting either redraws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from rich.text import Text
from textual.reactive import reactive

from layerscope.app.tui.widgets.plotext_chart import (
    PlotextChart,
    layer_ticks,
    marker_legend,
    shorten,
)

BandMode = Literal["none", "band", "bars"]
BAND_MODES: tuple[BandMode, ...] = ("none", "band", "bars")
BAND_LABELS = {"none": "no interval", "band": "95% CI band", "bars": "95% CI error bars"}

# Every overlaid run has its own colour and marker (layerscope.app.palettes): colour is lost in
# tmux without 256 colours, over plain SSH, with NO_COLOR and in the text export, so it is an
# extra cue, never the only one (the legend names each marker: plotext_chart.marker_legend).
SIGNIFICANCE_MARK = "*"
# what the x axis label adds under a panel with marks, the longest that fits
SIGNIFICANCE_LABELS = (
    f"   {SIGNIFICANCE_MARK} differs from baseline (q<0.05)",
    f"   {SIGNIFICANCE_MARK} differs (q<0.05)",
    f"  {SIGNIFICANCE_MARK} differs",
)
# what the x axis label adds while the tests behind the marks are being computed
TESTING_LABELS = ("   testing significance…", "   testing…")
# x axis: layer index, or normalised depth layer / (layers - 1) (analysis.compare.DEPTHS)
Depth = Literal["layer", "normalised"]
DEPTH_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def gutter_ticks(low: float, high: float, most: int) -> list[float]:
    """At most ``most`` round y ticks from ``low`` to ``high`` (1, 2 or 5 times a power of
    ten apart), none below ``low``: the row beneath is the stars' gutter."""
    if not high > low:
        return [low]
    for factor in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
        step = factor * 10 ** math.floor(math.log10((high - low) / most))
        first = math.ceil(low / step - 1e-9) * step
        ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
        if len(ticks) <= most:
            return [round(t, 12) for t in ticks] or [low]
    return [low, high]


def panel_grid(panels: int, width: int, height: int) -> tuple[int, int]:
    """Rows and columns of panels that keep each panel most readable.

    A panel is judged by its smaller side, with width counted at 2.5 characters per line of
    height (terminal cells are tall): 4 panels become 2x2 on a tall terminal, 1x4 on a flat one.
    """
    best = (1, panels)
    best_score = -1.0
    for columns in range(1, panels + 1):
        rows = math.ceil(panels / columns)
        if (rows - 1) * columns >= panels:
            continue
        score = min(width / columns / 2.5, height / rows)
        if score > best_score:
            best, best_score = (rows, columns), score
    return best


@dataclass(frozen=True)
class ChartSeries:
    """One curve: a run's mean statistic per layer for one projection; ``layers`` are layer
    indices, or normalised depths in 0..1 when the chart is drawn against depth."""

    label: str
    projection: str
    layers: list[float]
    mean: list[float]
    ci95: list[float]
    colour: str
    marker: str = "braille"
    settings: str = ""  # how the run was computed (app.labels.run_settings), for the legend
    band_marker: str = "·"  # the edges of its CI band (palettes.BAND_MARKERS)


class LayerChart(PlotextChart):
    """Curves per projection panel; keeps its data so that it can redraw at any size."""

    can_focus = True

    # projection -> x of the layers that differ significantly (layer, or normalised depth)
    marks: reactive[dict[str, list[float]]] = reactive(dict, layout=False, init=False)
    # the tests behind the marks are being computed (the curves are drawn already)
    testing: reactive[bool] = reactive(False, layout=False, init=False)

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.series: list[ChartSeries] = []
        self.projections: list[str] = []
        self.metric = ""
        self.band: BandMode = "none"
        self.log_scale = False
        self.log_refused = False
        self.legend_settings = False  # the legend names each run's settings, one run a line
        self.depth: Depth = "layer"
        self.placeholder = "Select runs to compare (Runs tab, space) or start a run (r)."

    def show(
        self,
        series: list[ChartSeries],
        projections: list[str],
        metric: str,
        band: BandMode,
        log_scale: bool,
        *,
        legend_settings: bool = False,
        marks: dict[str, list[float]] | None = None,
        testing: bool = False,
        depth: Depth = "layer",
    ) -> None:
        """Replace the data and redraw (the legend with each run's settings when asked; a mark
        at each layer of ``marks`` where a run differs from the first, or "testing…" while
        they are computed; x is normalised depth when ``depth`` says so, the series' ``layers``
        already converted)."""
        self.series = series
        self.set_reactive(LayerChart.marks, marks or {})
        self.set_reactive(LayerChart.testing, testing)
        self.depth = depth
        self.legend_settings = legend_settings
        self.projections = projections
        self.metric = metric
        self.band = band
        self.log_scale = log_scale
        self.log_refused = log_scale and any(
            value <= 0 or not math.isfinite(value) for item in series for value in item.mean
        )
        self.replot()

    def watch_marks(self) -> None:
        self.replot()

    def watch_testing(self) -> None:
        self.replot()

    def show_legend_settings(self, on: bool) -> None:
        """Legend with short labels (one line) or with each run's settings (one line a run)."""
        self.legend_settings = on
        self.replot()

    def empty_message(self) -> str | None:
        if not self.series or not self.projections:
            return self.placeholder
        return None

    def plot(self) -> None:
        if all(item.projection == "loss" for item in self.series):
            self._plot_loss()
            return
        shown = [p for p in self.projections if any(s.projection == p for s in self.series)]
        if not shown:
            return
        width, height = self.figure_size
        rows, columns = panel_grid(len(shown), width, height)
        figure = self.plt
        figure.subplots(rows, columns)
        panel_width = width // columns
        for position, projection in enumerate(shown):
            panel = figure.subplot(position // columns + 1, position % columns + 1)
            panel.theme("clear")
            # plotext drops a title wider than its panel less 4: shorten the statistic instead,
            # so that the projection's name always shows.
            suffix = " (log)" if self.log_scale and not self.log_refused else ""
            head = f"{projection}: "
            room = panel_width - 4 - len(head) - len(suffix)
            panel.title(head + shorten(self.metric, max(room, 1)) + suffix)
            layers = sorted(
                {layer for s in self.series if s.projection == projection for layer in s.layers}
            )
            if self.depth == "normalised":
                ticks = list(DEPTH_TICKS) if panel_width >= 30 else [0.0, 0.5, 1.0]
                panel.xticks(ticks, [f"{tick:g}" for tick in ticks])
            elif layers:
                # the plot area is the panel less its y tick labels and frame
                panel.xticks(layer_ticks([int(x) for x in layers], panel_width - 8))
            if position + columns >= len(shown):  # the bottom panel of its column
                axis = "depth" if self.depth == "normalised" else "layer"
                panel.xlabel(axis + self._marks_label(panel_width))
            for item in self.series:
                if item.projection != projection:
                    continue
                self._draw_series(panel, item)
            self._draw_marks(panel, projection, height // rows)

    def _marks_label(self, panel_width: int) -> str:
        """What the x axis label says about the stars, when any panel has them, or that the
        tests behind them are being computed."""
        labels: tuple[str, ...]
        if self.testing:
            labels = TESTING_LABELS
        elif any(self.marks.get(p) for p in self.projections):
            labels = SIGNIFICANCE_LABELS
        else:
            return ""
        room = panel_width - 14 - len("layer")  # plotext drops a longer label
        return next((text for text in labels if len(text) <= room), "")

    def _draw_marks(self, panel: object, projection: str, panel_height: int) -> None:
        """A star above each layer that differs significantly, in a gutter of its own: one
        plot row below everything drawn, where no y tick is labelled (the ticks stop at the
        data), so that the stars never read as a series at some value (such as 0.0)."""
        layers = self.marks.get(projection)
        values = self._drawn_values(projection)
        if not layers or not values:
            return
        # the panel's rows less title, frame, ticks and label; the extra row widens the range
        plot_rows = max(panel_height - 5, 3)
        share = 1.05 / (plot_rows - 2) if plot_rows > 2 else 0.5
        low, high = min(values), max(values)
        if self.log_scale and not self.log_refused:
            bottom = low / (high / low) ** share if high > low else low / 2
        else:
            bottom = low - ((high - low) or abs(low) or 1.0) * share
            ticks = gutter_ticks(low, high, max(2, min(5, plot_rows // 2)))
            panel.yticks(ticks, [f"{tick:.4g}" for tick in ticks])  # type: ignore[attr-defined]
        panel.scatter(layers, [bottom] * len(layers), marker=SIGNIFICANCE_MARK)  # type: ignore[attr-defined]

    def _drawn_values(self, projection: str) -> list[float]:
        """Every y value the panel draws: the means, and the bands' ends when bands show."""
        log = self.log_scale and not self.log_refused
        values = []
        for item in self.series:
            if item.projection != projection:
                continue
            for mean, ci in zip(item.mean, item.ci95 or [0.0] * len(item.mean), strict=False):
                if not math.isfinite(mean):
                    continue
                spread = ci if self.band != "none" and math.isfinite(ci) else 0.0
                values += [mean - spread, mean + spread] if spread else [mean]
        return [v for v in values if v > 0 or not log]

    def _plot_loss(self) -> None:
        """Loss has no layers: one bar per run (mean loss), interval as error bars."""
        figure = self.plt
        figure.theme("clear")
        figure.title("loss (mean over samples)")
        labels = [item.label for item in self.series if item.mean]
        means = [item.mean[0] for item in self.series if item.mean]
        colours = [item.colour for item in self.series if item.mean]
        if not means:
            return
        figure.bar(labels, means, color=colours, width=0.4)
        if self.band != "none":
            intervals = [item.ci95[0] if item.ci95 else 0.0 for item in self.series if item.mean]
            finite = [c if math.isfinite(c) else 0.0 for c in intervals]
            figure.error(list(range(1, len(means) + 1)), means, yerr=finite, color="gray")

    def header(self, width: int) -> Text | None:
        """The legend: each run's marker (in its colour) and name; with settings, a line a run."""
        if not self.series:
            return None
        runs: list[ChartSeries] = []
        for item in self.series:
            if all(item.label != seen.label for seen in runs):
                runs.append(item)
        if self.band == "band" and len(runs) > 1:  # which band is whose, colour or not
            runs = [replace(i, label=f"{i.label} ({i.band_marker} CI)") for i in runs]
        if not self.legend_settings:
            return marker_legend(((i.marker, i.colour, i.label) for i in runs), width)
        lines = []
        for item in runs:
            line = marker_legend([(item.marker, item.colour, item.label)])
            line.append(f"  {item.settings or 'settings not recorded'}", style="dim")
            line.truncate(width, overflow="ellipsis")
            lines.append(line)
        return Text("\n", no_wrap=True).join(lines)

    def _draw_series(self, panel: object, item: ChartSeries) -> None:
        points = [
            (layer, mean, ci)
            for layer, mean, ci in zip(item.layers, item.mean, item.ci95, strict=False)
            if math.isfinite(mean)
        ]
        if not points:
            return
        layers = [p[0] for p in points]
        means = [p[1] for p in points]
        intervals = [p[2] if math.isfinite(p[2]) else 0.0 for p in points]
        use_log = self.log_scale and not self.log_refused
        # The interval first, so that the mean curve is drawn on top of it.
        if self.band == "band" and any(intervals):
            upper = [m + c for m, c in zip(means, intervals, strict=True)]
            lower = [m - c for m, c in zip(means, intervals, strict=True)]
            if use_log:
                lower = [value if value > 0 else m for value, m in zip(lower, means, strict=True)]
            panel.plot(layers, upper, color=item.colour, marker=item.band_marker)  # type: ignore[attr-defined]
            panel.plot(layers, lower, color=item.colour, marker=item.band_marker)  # type: ignore[attr-defined]
        elif self.band == "bars" and any(intervals):
            panel.error(layers, means, yerr=intervals, color=item.colour)  # type: ignore[attr-defined]
        panel.plot(layers, means, color=item.colour, marker=item.marker)  # type: ignore[attr-defined]
        if use_log:
            panel.yscale("log")  # type: ignore[attr-defined]
