"""The command line's text charts: ``show``'s curves and spectra, drawn by :mod:`layerscope.app.charts`.

Why apart from :mod:`.output`: charts have concerns tables do not (a log axis that cannot show
values <= 0, legends that carry each run's sample count), and both grew past what one module
should hold. :func:`log_axis_problem` is shared with ``figure``, so that a statistic a log axis
cannot show is refused with the same one line in the terminal and in a figure file.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from layerscope.app.cli.output import chart_width, significance_mark

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LayerCurve
    from layerscope.analysis.results.compare import Comparison
    from layerscope.analysis.results.spectra import LayerSpectrum


def log_axis_problem(
    curves: Sequence[LayerCurve], labels: Mapping[str, str], metric: str
) -> str | None:
    """Why ``curves`` cannot be drawn on a log y axis, in one line naming the first mean <= 0
    (its run, projection and layer); None when every finite mean is positive. NaN means are
    not drawn anyway, so they are no reason."""
    for curve in curves:
        for layer, mean in zip(curve.layers, curve.mean, strict=False):
            if math.isfinite(mean) and mean <= 0:
                label = labels.get(curve.run_id, curve.run_id[:8])
                return (
                    f"--log-y: {metric} has a mean <= 0 ({label}, {curve.projection}, layer "
                    f"{layer}: {mean:.4g}), which a log axis cannot show; drop --log-y"
                )
    return None


def charts(
    comparison: Comparison,
    labels: Mapping[str, str],
    title: str,
    width: int | None,
    height: int,
    *,
    layer_counts: Mapping[str, int] | None = None,
    log_y: bool = False,
) -> list[str]:
    """One text chart per projection, the runs overlaid, each legend entry with the run's
    sample count (``n=6``); with ``layer_counts`` (run id -> the model's layers) against
    normalised depth, layer / (layers - 1), instead of layer; with ``log_y`` on a log y axis."""
    from layerscope.analysis.results.compare import normalised_depth
    from layerscope.app.charts import Series, render_curves
    from layerscope.app.labels import counted_labels

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    by_projection: dict[str, list[LayerCurve]] = {}
    for curve in comparison.curves:
        by_projection.setdefault(curve.projection, []).append(curve)
    rendered = []
    for projection, curves in by_projection.items():
        legend = counted_labels(labels, curves)
        series = [
            Series(
                legend[c.run_id],
                c.layers
                if layer_counts is None
                else normalised_depth(c.layers, layer_counts.get(c.run_id)),
                c.mean,
            )
            for c in curves
        ]
        chart = render_curves(
            series,
            title=f"{title} · {projection}",
            width=chart_width(width),
            height=height,
            color=color,
            xlabel="layer" if layer_counts is None else "normalised depth",
            log_y=log_y,
        )
        marks = [
            significance_mark(r, labels)
            for r in comparison.significance
            if r.projection == projection
        ]
        rendered.append("\n".join([chart, *marks]))
    return rendered


def spectrum_chart(
    spectra: Sequence[LayerSpectrum], title: str, width: int | None, height: int
) -> str:
    """One projection's layers as log-log series: mean singular value against rank, each
    layer with its own marker, the legend naming the layers."""
    from layerscope.app.charts import Series, render_log_log

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    series = [Series(f"layer {s.layer}", [float(r) for r in s.ranks], s.means) for s in spectra]
    return render_log_log(
        series,
        title=title,
        xlabel="rank",
        width=chart_width(width),
        height=height,
        color=color,
    )
