"""Layer-wise curves drawn as text with plotext, for the headless CLI (and anyone who wants a
chart as a string).

Why a string: ``layerscope show`` runs over SSH and in scripts; a chart that is just text can be
printed, piped, logged or compared in a test. plotext keeps global figure state, so every call
starts from a cleared figure; colours are kept only for a terminal, and never with ``NO_COLOR``.
Colour is lost often (tmux, plain SSH, a log file, a colour-blind reader), so every series has
its own marker glyph with or without colour, and the legend pairs each glyph with its label.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import plotext

from layerscope.app.palettes import SERIES_COLOURS, SERIES_MARKERS


def _new_figure(width: int, height: int, color: bool) -> bool:
    """Start from a cleared figure of this size (plotext keeps global state); whether colour
    is used (not when ``NO_COLOR`` is set)."""
    color = color and "NO_COLOR" not in os.environ
    plotext.clear_figure()
    plotext.plotsize(max(width, 30), max(height, 8))
    plotext.theme("clear" if not color else "pro")
    return color


def _title(title: str, width: int) -> None:
    if title:
        room = max(width, 30) - 2
        plotext.title(title if len(title) <= room else title[: room - 1] + "…")


def _built(color: bool) -> str:
    """The figure as text (ANSI colours only with ``color``), and the figure cleared."""
    text = plotext.build()
    plotext.clear_figure()
    return text if color else plotext.uncolorize(text)


@dataclass(frozen=True)
class Series:
    """One curve: a label and y values by layer, or by normalised depth in 0..1 (NaN values
    are left out of the line)."""

    label: str
    layers: Sequence[float]
    values: Sequence[float]


def render_curves(
    series: Sequence[Series],
    *,
    title: str = "",
    ylabel: str = "",
    width: int = 80,
    height: int = 18,
    color: bool = False,
    xlabel: str = "layer",
    log_y: bool = False,
) -> str:
    """The curves overlaid in one chart, as text (ANSI colours only with ``color`` and no
    ``NO_COLOR`` in the environment); series ``n`` is drawn with ``SERIES_MARKERS[n]`` either way.
    Whole-number x values get a tick per layer (or every n-th); fractional ones (normalised
    depth) get ticks at 0, 0.25, ..., 1. With ``log_y`` the y axis is logarithmic (ticks at
    powers of ten when the values span two decades) and values <= 0, which it cannot show, are
    left out: callers that must not lose points silently check first (``show --log-y`` does)."""
    color = _new_figure(width, height, color)
    drawn = 0
    layers: set[float] = set()
    shown: list[float] = []
    for number, curve in enumerate(series):
        points = [
            (layer, value)
            for layer, value in zip(curve.layers, curve.values, strict=False)
            if value is not None and math.isfinite(value) and (value > 0 or not log_y)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        plotext.plot(
            list(xs),
            list(ys),
            label=curve.label,
            marker=SERIES_MARKERS[number % len(SERIES_MARKERS)],
            color=SERIES_COLOURS[number % len(SERIES_COLOURS)],
        )
        drawn += 1
        layers.update(xs)
        shown.extend(ys)
    if log_y and drawn:
        plotext.yscale("log")
        decades = decade_ticks(shown)
        if decades:
            plotext.yticks(*decades)
    _title(title, width)
    plotext.xlabel(xlabel)
    if layers and all(float(x).is_integer() for x in layers):
        first, last = int(min(layers)), int(max(layers))
        step = max(1, (last - first) // 10)
        plotext.xticks(list(range(first, last + 1, step)))
    elif layers:
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
        plotext.xticks(ticks, [f"{tick:g}" for tick in ticks])
    if ylabel:
        plotext.ylabel(ylabel)
    if drawn == 0:
        plotext.clear_figure()
        what = "positive" if log_y else "finite"
        return f"{title}: no {what} values to plot" if title else f"no {what} values to plot"
    return _built(color)


@dataclass(frozen=True)
class Points:
    """One group of a scatter: a label and (x, y) pairs (non-finite pairs are left out)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]


def render_scatter(
    groups: Sequence[Points],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 80,
    height: int = 18,
    color: bool = False,
) -> str:
    """Per-sample points (one per sample, e.g. a statistic against response length), as text;
    group ``n`` is drawn with ``SERIES_MARKERS[n]`` (the selected samples stay apart without colour)."""
    color = _new_figure(width, height, color)
    drawn = 0
    for number, group in enumerate(groups):
        points = [
            (x, y)
            for x, y in zip(group.xs, group.ys, strict=False)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        plotext.scatter(
            list(xs),
            list(ys),
            label=group.label,
            marker=SERIES_MARKERS[number % len(SERIES_MARKERS)],
            color=SERIES_COLOURS[number % len(SERIES_COLOURS)],
        )
        drawn += 1
    _title(title, width)
    if xlabel:
        plotext.xlabel(xlabel)
    if ylabel:
        plotext.ylabel(ylabel)
    if drawn == 0:
        plotext.clear_figure()
        return f"{title}: no finite values to plot" if title else "no finite values to plot"
    return _built(color)


def decade_ticks(values: Sequence[float], most: int = 8) -> tuple[list[float], list[str]] | None:
    """Powers of ten spanning the positive ``values`` (every n-th, ``most`` at most), labelled
    ``1e-3``; None when they span less than two decades (plotext's own ticks read better)."""
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if not positive:
        return None
    low = math.floor(math.log10(min(positive)))
    high = math.ceil(math.log10(max(positive)))
    if high - low < 2:
        return None
    step = max(1, math.ceil((high - low + 1) / most))
    exponents = list(range(low, high + 1, step))
    return [10.0**e for e in exponents], [f"1e{e}" for e in exponents]


def render_log_log(
    series: Sequence[Series],
    *,
    title: str = "",
    xlabel: str = "rank",
    ylabel: str = "",
    width: int = 80,
    height: int = 18,
    color: bool = False,
) -> str:
    """Series drawn with both axes logarithmic (a spectrum: value against rank, x taken from
    ``Series.layers``); values <= 0 or not finite are left out, as log axes cannot show them.
    Series ``n`` is drawn with ``SERIES_MARKERS[n]``. The legend is a line below the chart, not
    plotext's box: a spectrum starts at the top left, where that box would cover it."""
    color = _new_figure(width, height, color)
    legend: list[str] = []
    for number, curve in enumerate(series):
        points = [
            (x, y)
            for x, y in zip(curve.layers, curve.values, strict=False)
            if x > 0 and y is not None and math.isfinite(y) and y > 0
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        marker = SERIES_MARKERS[number % len(SERIES_MARKERS)]
        plotext.plot(
            list(xs), list(ys), marker=marker, color=SERIES_COLOURS[number % len(SERIES_COLOURS)]
        )
        legend.append(f"{marker} {curve.label}")
    if not legend:
        plotext.clear_figure()
        return f"{title}: no positive values to plot" if title else "no positive values to plot"
    plotext.xscale("log")
    plotext.yscale("log")
    ticks = decade_ticks([y for curve in series for y in curve.values if y is not None])
    if ticks:
        plotext.yticks(*ticks)
    _title(title, width)
    plotext.xlabel(xlabel)
    if ylabel:
        plotext.ylabel(ylabel)
    text = _built(color)
    lines = [""]
    for entry in legend:  # the legend wrapped to the chart's width
        joined = f"{lines[-1]}  {entry}" if lines[-1] else entry
        if len(joined) <= max(width, 30) or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(entry)
    return text.rstrip("\n") + "\n" + "\n".join(lines)
