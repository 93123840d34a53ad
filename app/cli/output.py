"""What the command line prints: tables, charts and JSON records of cached results.

Why apart from the commands: stdout is a contract with scripts (run ids, tables, JSON) and with
people reading piped output, so every command renders through the same few functions here; the
numbers themselves come ready from ``analysis/`` (curves, MAD rows, relative differences), and
nothing here computes a statistic.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from layerscope.analysis.compare import Comparison, MadRow, RelativeDifferenceRow
    from layerscope.analysis.records import LayerCurve, RunInfo


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people too: do not squeeze tables into 80 columns.
    width = None if stream.isatty() else max(120, shutil.get_terminal_size((120, 24)).columns)
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def chart_width(width: int | None) -> int:
    return width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 160))


# ---- JSON records -----------------------------------------------------------------------------


def run_record(info: RunInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "model": info.model,
        "dataset": info.dataset,
        "type": info.response_type,
        "mode": info.mode,
        "status": info.status,
        "interrupted": info.interrupted,
        "samples": info.samples_done,
        "samples_total": info.samples_total,
        "skipped": info.samples_skipped,
        "failed": info.samples_failed,
        "layers": info.layers,
        "projections": list(info.projections),
        "started_at": info.started_at.isoformat() if info.started_at else None,
        "finished_at": info.finished_at.isoformat() if info.finished_at else None,
        "settings": info.settings,
        "provenance": info.provenance,
    }


def curve_record(curve: LayerCurve) -> dict[str, Any]:
    return {
        "run_id": curve.run_id,
        "projection": curve.projection,
        "layers": curve.layers,
        "mean": [finite(v) for v in curve.mean],
        "std": [finite(v) for v in curve.std],
        "ci95": [finite(v) for v in curve.ci95],
        "count": curve.count,
        "excluded_nonfinite": curve.excluded_nonfinite,
    }


def mad_record(row: MadRow) -> dict[str, Any]:
    return {k: finite(v) if isinstance(v, float) else v for k, v in asdict(row).items()}


def relative_record(row: RelativeDifferenceRow, labels: Mapping[str, str]) -> dict[str, Any]:
    a, b = row.baseline_run_id, row.run_id
    return {
        "a": a,
        "b": b,
        "a_label": labels.get(a, a[:8]),
        "b_label": labels.get(b, b[:8]),
        "projection": row.projection,
        "value": finite(row.value),
        "top_layers": [[layer, finite(value)] for layer, value in row.top_layers],
    }


def comparison_record(
    comparison: Comparison, infos: Sequence[RunInfo], labels: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "metric": comparison.metric,
        "response_tokens": comparison.response_tokens,
        "runs": [run_record(info) for info in infos],
        "curves": [curve_record(c) for c in comparison.curves],
        "mad": [mad_record(row) for row in comparison.mad],
        "relative_differences": [relative_record(r, labels) for r in comparison.relative],
    }


# ---- tables and charts ------------------------------------------------------------------------


def runs_table(infos: Sequence[RunInfo], title: str) -> Table:
    from rich.table import Table

    from layerscope.app.labels import short_model

    table = Table(title=title, title_justify="left")
    for name in ("id", "model", "dataset", "type", "mode", "status", "samples", "layers"):
        table.add_column(name, justify="right" if name in ("samples", "layers") else "left")
    table.add_column("started")
    for info in infos:
        samples = f"{info.samples_done}/{info.samples_total}"
        if info.samples_skipped:
            samples += f" ({info.samples_skipped} skipped)"
        if info.samples_failed:
            samples += f" ({info.samples_failed} failed)"
        started = info.started_at.strftime("%Y-%m-%d %H:%M") if info.started_at else ""
        table.add_row(
            info.short_id,
            short_model(info.model),
            info.dataset,
            info.response_type,
            info.mode,
            "interrupted" if info.interrupted else info.status,
            samples,
            str(info.layers),
            started,
        )
    return table


def charts(
    comparison: Comparison,
    labels: Mapping[str, str],
    title: str,
    width: int | None,
    height: int,
) -> list[str]:
    """One text chart per projection, the runs overlaid."""
    from layerscope.app.charts import Series, render_curves

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    by_projection: dict[str, list[LayerCurve]] = {}
    for curve in comparison.curves:
        by_projection.setdefault(curve.projection, []).append(curve)
    rendered = []
    for projection, curves in by_projection.items():
        series = [Series(labels.get(c.run_id, c.run_id[:8]), c.layers, c.mean) for c in curves]
        rendered.append(
            render_curves(
                series,
                title=f"{title} · {projection}",
                width=chart_width(width),
                height=height,
                color=color,
            )
        )
    return rendered


def mad_table(comparison: Comparison, labels: Mapping[str, str]) -> Table:
    from rich.table import Table

    from layerscope.analysis.compare import layer_splits

    layers = max((len(c.layers) for c in comparison.curves), default=0)
    early, middle, late = layer_splits(layers)
    table = Table(
        title=f"MAD of {comparison.metric} between adjacent layers "
        f"(early {early.start}-{early.stop - 1}, middle {middle.start}-{middle.stop - 1}, "
        f"late {late.start}-{late.stop - 1})",
        title_justify="left",
    )
    for name in ("run", "proj", "all", "early", "middle", "late", "samples", "excluded"):
        table.add_column(name, justify="left" if name in ("run", "proj") else "right")
    counts = {(c.run_id, c.projection): c for c in comparison.curves}
    for row in comparison.mad:
        curve = counts[(row.run_id, row.projection)]
        table.add_row(
            labels.get(row.run_id, row.run_id[:8]),
            row.projection,
            fmt(row.all),
            fmt(row.early),
            fmt(row.middle),
            fmt(row.late),
            str(max(curve.count, default=0)),
            str(curve.excluded_nonfinite),
        )
    return table


def relative_table(comparison: Comparison, labels: Mapping[str, str]) -> Table:
    from rich.table import Table

    table = Table(
        title="relative difference: mean over layers of |a - b| / |a|", title_justify="left"
    )
    for name in ("a (baseline)", "b", "proj", "RD", "largest at layers"):
        table.add_column(name, justify="right" if name == "RD" else "left")
    for row in comparison.relative:
        record = relative_record(row, labels)
        top = ", ".join(f"{layer} ({fmt(value, 3)})" for layer, value in record["top_layers"])
        table.add_row(
            record["a_label"], record["b_label"], row.projection, fmt(record["value"]), top
        )
    return table


def loss_table(comparison: Comparison, labels: Mapping[str, str]) -> Table:
    from rich.table import Table

    table = Table(title="loss over samples", title_justify="left")
    for name in ("run", "mean", "std", "95% CI ±", "samples", "excluded"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for curve in comparison.curves:
        table.add_row(
            labels.get(curve.run_id, curve.run_id[:8]),
            fmt(curve.mean[0] if curve.mean else math.nan),
            fmt(curve.std[0] if curve.std else math.nan),
            fmt(curve.ci95[0] if curve.ci95 else math.nan),
            str(curve.count[0] if curve.count else 0),
            str(curve.excluded_nonfinite),
        )
    return table
