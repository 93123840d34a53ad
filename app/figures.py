"""The paper's four-panel figure (q, k, v, o against layer, runs overlaid) as a PNG, SVG or PDF.

Why matplotlib, and only here: a figure that goes into a paper needs vector output and fonts a
journal accepts, which text charts cannot give; but matplotlib is large, so it is an optional
extra (``layerscope[figures]``) imported only when a figure is drawn: ``layerscope figure`` and
the explorer's export, never browsing. Everything drawn comes from stored curves (mean and 95%
interval per layer, from :mod:`layerscope.analysis.curves.statistics`), so the figure shows exactly
the numbers ``show`` prints. Every run has its own marker and line style as well as a colour,
so the figure stays readable in greyscale print; SVG keeps its text as text and PDF embeds
TrueType fonts, so titles and labels stay editable. The file is written as every export is
(:func:`layerscope.analysis.base.outputs.open_output`: never the cache, no overwrite unless asked).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from layerscope.analysis.base.outputs import open_output
from layerscope.analysis.base.records import ATTENTION_PROJECTIONS, LayerCurve
from layerscope.analysis.curves.statistics import ci95
from layerscope.analysis.results.compare import normalised_depth

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = [
    "FIGURE_FORMATS",
    "MISSING_MATPLOTLIB",
    "PANELS",
    "figure_bytes",
    "figure_format",
    "have_matplotlib",
    "panel_title",
    "paper_figure",
    "save_figure",
]

FIGURE_FORMATS = ("png", "svg", "pdf")
PANELS = ATTENTION_PROJECTIONS  # q, k, v, o: the paper's four panels
MISSING_MATPLOTLIB = "figure needs matplotlib: pip install 'layerscope[figures]'"
# Told apart without colour: each run's marker and line style (and a colour besides).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")
SIZE_INCHES = (8.0, 6.5)
PNG_DPI = 200
DEPTH_LABELS = {"layer": "layer", "normalised": "normalised depth, layer / (layers − 1)"}


def have_matplotlib() -> bool:
    """Whether the figures extra is installed (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def figure_format(path: Path | str) -> str:
    """The format a file name asks for (png, svg or pdf); ValueError naming the file."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise ValueError(f"{path}: give a file name ending in .png, .svg or .pdf")
    return suffix


def panel_title(projection: str) -> str:
    """A panel's title: the projection's parameter name, as the paper's figures label them."""
    return f"{projection}_proj"


def paper_figure(
    curves: Sequence[LayerCurve],
    labels: Mapping[str, str],
    metric: str,
    *,
    layer_counts: Mapping[str, int] | None = None,
    depth: str = "layer",
    band: bool = False,
    title: str = "",
    log_y: bool = False,
) -> Figure:
    """Four panels (q, k, v, o), each run's curve of ``metric`` overlaid in the order of
    ``curves``; with ``band`` the 95% interval of the mean as a shaded band. ``depth``
    ``normalised`` draws x = layer / (layers - 1), ``layers`` from ``layer_counts`` by run id
    (default: the curve's own last layer + 1), so that models of different depths overlay.
    The legend gives each run's sample count (``n=6``). With ``log_y`` the y axes are
    logarithmic; means <= 0 are then left out (the command line refuses them first), and a
    band reaching below 0 is cut at the axis, matplotlib's clipping."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from layerscope.app.labels import counted_labels

    runs: list[str] = []
    for curve in curves:
        if curve.run_id not in runs:
            runs.append(curve.run_id)
    style = {
        run_id: (MARKERS[n % len(MARKERS)], LINE_STYLES[n % len(LINE_STYLES)], f"C{n % 10}")
        for n, run_id in enumerate(runs)
    }
    legend = counted_labels(labels, curves)
    figure = Figure(figsize=SIZE_INCHES, layout="constrained")
    axes = figure.subplots(2, 2, sharex=True)
    handles: dict[str, Line2D] = {}
    for position, projection in enumerate(PANELS):
        panel = axes[position // 2][position % 2]
        panel.set_title(panel_title(projection))
        panel.grid(True, linewidth=0.4, alpha=0.5)
        if position % 2 == 0:
            panel.set_ylabel(metric)
        if position >= 2:
            panel.set_xlabel(DEPTH_LABELS.get(depth, depth))
        if depth != "normalised":
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole
        if log_y:
            panel.set_yscale("log")
        drawn = False
        for curve in curves:
            if curve.projection != projection:
                continue
            points = [
                (layer, mean, ci)
                for layer, mean, ci in zip(curve.layers, curve.mean, ci95(curve), strict=False)
                if math.isfinite(mean) and (mean > 0 or not log_y)
            ]
            if not points:
                continue
            layers = [p[0] for p in points]
            if depth == "normalised":
                count = (layer_counts or {}).get(curve.run_id)
                xs = normalised_depth(layers, count or max(curve.layers) + 1)
            else:
                xs = [float(layer) for layer in layers]
            means = [p[1] for p in points]
            marker, line_style, colour = style[curve.run_id]
            (line,) = panel.plot(
                xs,
                means,
                marker=marker,
                linestyle=line_style,
                color=colour,
                markersize=4,
                linewidth=1.2,
                label=legend[curve.run_id],
            )
            handles.setdefault(curve.run_id, line)
            if band:
                half = [p[2] if math.isfinite(p[2]) else 0.0 for p in points]
                panel.fill_between(
                    xs,
                    [m - h for m, h in zip(means, half, strict=True)],
                    [m + h for m, h in zip(means, half, strict=True)],
                    color=colour,
                    alpha=0.18,
                    linewidth=0,
                )
            drawn = True
        if not drawn:
            panel.text(0.5, 0.5, f"no {projection} curve", ha="center", va="center",
                       transform=panel.transAxes, color="0.4")  # fmt: skip
    if handles:
        figure.legend(
            list(handles.values()),
            [legend[run_id] for run_id in handles],
            loc="outside lower center",
            ncols=min(len(handles), 4),
            frameon=False,
        )
    if title:
        figure.suptitle(title)
    return figure


def save_figure(
    figure: Figure, path: Path | str, protected: Mapping[Path, str], *, force: bool = False
) -> str:
    """Write ``figure`` to ``path`` in the format its name asks for; returns the format.

    SVG keeps text as text and PDF embeds TrueType fonts (both stay editable); the file is
    published whole or not at all, and never over the cache (``protected``) or, without
    ``force``, over an existing file (:class:`~layerscope.analysis.base.outputs.OutputError`).
    """
    chosen = figure_format(path)
    content = figure_bytes(figure, chosen)  # drawn before the file is opened
    with open_output(path, protected, force=force) as handle:
        handle.write(content)
    return chosen


def figure_bytes(figure: Figure, chosen: str) -> bytes:
    """The figure as the bytes of a PNG, SVG or PDF file (text kept editable, no date)."""
    import io

    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        figure.savefig(buffer, format=chosen, dpi=PNG_DPI, metadata=_metadata(chosen))
    return buffer.getvalue()


def _metadata(chosen: str) -> dict[str, str | None]:
    """No creation date in the file, so that drawing the same runs twice gives the same bytes."""
    if chosen == "png":
        return {"Software": None}
    if chosen == "svg":
        return {"Date": None}
    return {"CreationDate": None}
