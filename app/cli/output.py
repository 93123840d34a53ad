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

from layerscope.analysis.curves.statistics import ci95
from layerscope.app.cli.tables import Column, FittedTable, fitted_table, fold

if TYPE_CHECKING:
    from rich.console import Console

    from layerscope.analysis.base.records import LayerCurve, RunInfo
    from layerscope.analysis.curves.significance import ProjectionSignificance
    from layerscope.analysis.results.compare import Comparison, MadRow, RelativeDifferenceRow


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people too: do not squeeze tables into 80 columns, unless the
    # user asked for a width ($COLUMNS, which Rich reads itself).
    width = (
        None
        if stream.isatty() or os.environ.get("COLUMNS", "").isdigit()
        else max(120, shutil.get_terminal_size((120, 24)).columns)
    )
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
        "shard": info.provenance.get("shard"),
        "shards": info.provenance.get("shards"),
        "samples": info.samples_done,
        "samples_total": info.samples_total,
        "samples_requested": info.samples_requested,
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
        "ci95": [finite(v) for v in ci95(curve)],
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
    """Everything ``show`` reports, as JSON values; each curve also carries ``depth``, its
    layers' normalised depth layer / (layers - 1), to overlay models of different depths."""
    from layerscope.analysis.results.compare import normalised_depth

    layer_counts = {info.id: info.layers for info in infos}
    curves = []
    for curve in comparison.curves:
        record = curve_record(curve)
        if curve.projection != "loss":
            record["depth"] = normalised_depth(curve.layers, layer_counts.get(curve.run_id))
        curves.append(record)
    return {
        "metric": comparison.metric,
        "response_tokens": comparison.response_tokens,
        "runs": [run_record(info) for info in infos],
        "curves": curves,
        "mad": [mad_record(row) for row in comparison.mad],
        "relative_differences": [relative_record(r, labels) for r in comparison.relative],
        "significance": [significance_record(r, labels) for r in comparison.significance],
    }


def significance_record(row: ProjectionSignificance, labels: Mapping[str, str]) -> dict[str, Any]:
    """One pair's layer-wise tests for one projection (differences are b - a)."""
    return {
        "a": row.run_a,
        "b": row.run_b,
        "a_label": labels.get(row.run_a, row.run_a[:8]),
        "b_label": labels.get(row.run_b, row.run_b[:8]),
        "projection": row.projection,
        "test": row.test,
        "pairing": row.pairing,
        "permutation": row.permutation,
        "alpha": row.alpha,
        "correction": "Benjamini-Hochberg across layers",
        "verdict": row.verdict,
        "differing_layers": row.differing,
        "layers": [
            {
                "layer": t.layer,
                "n_a": t.n_a,
                "n_b": t.n_b,
                "mean_a": finite(t.mean_a),
                "mean_b": finite(t.mean_b),
                "difference": finite(t.difference),
                "t": finite(t.statistic),
                "dof": finite(t.dof),
                "p": finite(t.p_value),
                "q": finite(t.q_value),
                "effect_size": finite(t.effect_size),
                "permutation_p": None if t.permutation_p is None else finite(t.permutation_p),
                "permutation_q": None if t.permutation_q is None else finite(t.permutation_q),
            }
            for t in row.layers
        ],
    }


# ---- tables and charts ------------------------------------------------------------------------


def status_text(info: RunInfo) -> str:
    """The run's status as ``runs`` shows it: a shard of an array job says so ("complete,
    shard 0/8"), and a merged run that lacks shards says which it holds ("partial, shards
    0/8 1/8"): both are complete only for part of the request."""
    status = "interrupted" if info.interrupted else info.status
    shard = info.provenance.get("shard")
    shards = info.provenance.get("shards")
    if shard and status == "complete":
        return f"complete, shard {shard}"
    if shards and status != "complete":
        return f"partial, shards {' '.join(str(s) for s in shards)}"
    return status


RUNS_COLUMNS = (
    Column("id", whole=True),
    Column("model"),
    Column("dataset"),
    Column("type", whole=True),
    Column("mode", drop=3),
    Column("status"),
    Column("samples", justify="right"),
    Column("layers", justify="right", drop=2),
    Column("started", drop=1),
)


def runs_table(infos: Sequence[RunInfo], title: str, width: int) -> FittedTable:
    """The runs, one a row; at any width ids and response types are shown whole."""
    from layerscope.app.labels import short_model

    rows = []
    for info in infos:
        samples = f"{info.samples_done}/{info.samples_requested}"  # --limit: of those asked for
        if info.samples_skipped:
            samples += f" ({info.samples_skipped} skipped)"
        if info.samples_failed:
            samples += f" ({info.samples_failed} failed)"
        started = info.started_at.strftime("%Y-%m-%d %H:%M") if info.started_at else ""
        rows.append((
            info.short_id,
            short_model(info.model),
            info.dataset,
            info.response_type,
            info.mode,
            status_text(info),
            samples,
            str(info.layers),
            started,
        ))  # fmt: skip
    return fitted_table(title, RUNS_COLUMNS, rows, width)


def mad_table(comparison: Comparison, labels: Mapping[str, str], width: int) -> FittedTable:
    from layerscope.analysis.results.compare import layer_splits

    layers = max((len(c.layers) for c in comparison.curves), default=0)
    early, middle, late = layer_splits(layers)
    title = (
        f"MAD of {comparison.metric} between adjacent layers "
        f"(early {early.start}-{early.stop - 1}, middle {middle.start}-{middle.stop - 1}, "
        f"late {late.start}-{late.stop - 1})"
    )
    columns = [Column("run", whole=True), Column("proj", whole=True)]
    columns += [
        Column(name, justify="right", whole=True) for name in ("all", "early", "middle", "late")
    ]
    columns += [Column("samples", justify="right"), Column("excluded", justify="right", drop=1)]
    counts = {(c.run_id, c.projection): c for c in comparison.curves}
    rows = []
    for row in comparison.mad:
        curve = counts[(row.run_id, row.projection)]
        rows.append((
            labels.get(row.run_id, row.run_id[:8]),
            row.projection,
            fmt(row.all),
            fmt(row.early),
            fmt(row.middle),
            fmt(row.late),
            str(max(curve.count, default=0)),
            str(curve.excluded_nonfinite),
        ))  # fmt: skip
    return fitted_table(title, columns, rows, width)


def relative_table(comparison: Comparison, labels: Mapping[str, str], width: int) -> FittedTable:
    columns = (
        Column("a (baseline)", whole=True),
        Column("b", whole=True),
        Column("proj", whole=True),
        Column("RD", justify="right", whole=True),
        Column("largest at layers"),
    )
    rows = []
    for row in comparison.relative:
        record = relative_record(row, labels)
        top = ", ".join(f"{layer} ({fmt(value, 3)})" for layer, value in record["top_layers"])
        rows.append(
            (record["a_label"], record["b_label"], row.projection, fmt(record["value"]), top)
        )
    title = "relative difference: mean over layers of |a - b| / |a|"
    return fitted_table(title, columns, rows, width)


def layer_list(layers: Sequence[int]) -> str:
    """Layers as short ranges: 0-3, 7, 9-11 ("none" when empty)."""
    if not layers:
        return "none"
    parts: list[str] = []
    start = previous = layers[0]
    for layer in [*layers[1:], None]:
        if layer is not None and layer == previous + 1:
            previous = layer
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if layer is not None:
            start = previous = layer
    return ", ".join(parts)


def significance_mark(row: ProjectionSignificance, labels: Mapping[str, str]) -> str:
    """The line under a chart: where run b differs from run a."""
    a, b = labels.get(row.run_a, row.run_a[:8]), labels.get(row.run_b, row.run_b[:8])
    if not row.differing:
        return f"  {b} does not differ from {a} at any layer (q < {row.alpha:g})"
    return f"* {b} differs from {a} (q < {row.alpha:g}) at layers {layer_list(row.differing)}"


def significance_table(
    comparison: Comparison, labels: Mapping[str, str], width: int
) -> FittedTable:
    """Per pair and projection: the verdict, the layers that differ and the largest effect."""
    columns = (
        Column("a", whole=True),
        Column("b", whole=True),
        Column("proj", whole=True),
        Column("test", whole=True),
        Column("verdict"),
        Column("differing layers"),
        Column("max |effect|", justify="right", drop=1),
    )
    rows = []
    for row in comparison.significance:
        effects = [abs(t.effect_size) for t in row.layers if math.isfinite(t.effect_size)]
        rows.append((
            labels.get(row.run_a, row.run_a[:8]),
            labels.get(row.run_b, row.run_b[:8]),
            row.projection,
            row.test,
            row.summary,
            layer_list(row.differing),
            fmt(max(effects), 3) if effects else "-",
        ))  # fmt: skip
    alpha = comparison.significance[0].alpha if comparison.significance else 0.05
    title = f"is b different from a? layers with Benjamini-Hochberg q < {alpha:g}"
    return fitted_table(title, columns, rows, width)


def paragraph(text: str, width: int) -> str:
    """``text`` wrapped at spaces to ``width``, a word longer than that left whole (a run's
    label is never cut): print it with ``overflow="ignore", crop=False``."""
    return "\n".join(fold(text, width, cut=False))


def significance_notes(comparison: Comparison, labels: Mapping[str, str]) -> list[str]:
    """One line per pair: which test and why, and what the permutation test says."""
    lines = []
    seen: set[tuple[str, str]] = set()
    for row in comparison.significance:
        if (row.run_a, row.run_b) in seen:
            continue
        seen.add((row.run_a, row.run_b))
        pair = [r for r in comparison.significance if (r.run_a, r.run_b) == (row.run_a, row.run_b)]
        a, b = labels.get(row.run_a, row.run_a[:8]), labels.get(row.run_b, row.run_b[:8])
        line = f"{b} vs {a}: {row.test} ({row.pairing})"
        if row.permutation:
            agree = ", ".join(
                f"{r.projection} {sum(1 for t in r.layers if (t.permutation_q or 1) < r.alpha)}"
                f"/{len(r.tested)}"
                for r in pair
            )
            line += f"; sign-flip permutation test ({row.permutation}) differs at {agree} layers"
        effect = "d_z" if row.permutation else "Cohen's d"
        lines.append(line + f"; effect size {effect}")
    return lines


def loss_table(comparison: Comparison, labels: Mapping[str, str], width: int) -> FittedTable:
    columns = [Column("run", whole=True)]
    columns += [Column(name, justify="right", whole=True) for name in ("mean", "std", "95% CI ±")]
    columns += [Column("samples", justify="right"), Column("excluded", justify="right", drop=1)]
    rows = [
        (
            labels.get(curve.run_id, curve.run_id[:8]),
            fmt(curve.mean[0] if curve.mean else math.nan),
            fmt(curve.std[0] if curve.std else math.nan),
            fmt(ci95(curve)[0] if curve.count else math.nan),
            str(curve.count[0] if curve.count else 0),
            str(curve.excluded_nonfinite),
        )
        for curve in comparison.curves
    ]
    return fitted_table("loss over samples", columns, rows, width)
