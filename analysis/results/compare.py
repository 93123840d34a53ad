"""The paper's comparisons of layer-wise curves: MAD over depth and relative difference.

Why here and not in the UI: the CLI's ``show``/``check``, the TUI and the tests must report the
same numbers for the same curves, so the arithmetic lives in one torch-free module. Summing over
samples (with length control) is SQL in :mod:`layerscope.analysis.cache`; turning those sums into
mean, std and confidence interval is this layer's :mod:`layerscope.analysis.curves.statistics`; this
module works on the resulting :class:`LayerCurve` objects.

Definitions (after arXiv 2410.23743 and its released ``code_vis/exp_utils.py``):

* **MAD** of a curve v over layers is the mean absolute difference between adjacent layers,
  ``mean(|v[i+1] - v[i]|)``. A segment's MAD (early, middle, late) uses only the differences
  inside the segment, as the paper's script does.
* **Layer splits**: the paper's split points for the models it studies, by number of layers:
  26 (Gemma 2 2B) 7/13/6, 28 (Qwen2 1.5B) 7/14/7, 32 (Llama 2 7B, Llama 3 8B) 10/10/12 and
  42 (Gemma 2 9B) 12/18/12. Any other depth is cut into thirds, the remainder going to the middle
  and then the late part (e.g. 4 layers: 1/2/1, 8 layers: 2/3/3).
* **Significance** of each compared pair, per layer and projection:
  :mod:`layerscope.analysis.results.pair_significance` (computed once per pair and reused).
* **Normalised depth** of layer i in a model of L layers is ``i / (L - 1)`` (0 for a one-layer
  model): the first layer at 0, the last at 1, so that models of different depths (28 and 42
  layers, say) overlay on one x axis.
* **Relative difference** of curve b against baseline a: ``mean over layers of |a - b| / |a|``,
  where a zero baseline value is replaced by 1e-10 as in the paper; layers where either value is
  not finite are left out. The five layers where it is largest are reported with their values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.base.records import METRICS, LayerCurve
from layerscope.analysis.curves.significance import ProjectionSignificance
from layerscope.analysis.curves.statistics import curve_from_sums, t_critical_975
from layerscope.analysis.results.pair_significance import significance_rows

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache

__all__ = [
    "DEPTHS",
    "Comparison",
    "MadRow",
    "RelativeDifference",
    "RelativeDifferenceRow",
    "compare_runs",
    "curve_from_sums",
    "layer_splits",
    "mad",
    "mad_row",
    "mad_table",
    "normalised_depth",
    "relative_difference",
    "relative_rows",
    "resolve_metric",
    "significance_rows",
    "t_critical_975",
]

# The paper's (early, middle, late) layer counts for the depths it studies.
PAPER_SPLITS: dict[int, tuple[int, int, int]] = {
    26: (7, 13, 6),
    28: (7, 14, 7),
    32: (10, 10, 12),
    42: (12, 18, 12),
}
# What the paper's script substitutes for a zero baseline value in the relative difference.
ZERO_BASELINE = 1e-10
TOP_LAYERS = 5

# Short names users type (CLI --metric) -> statistic names in the cache.
METRIC_ALIASES = {
    "nuclear": "nuclear_norm",
    "frobenius": "frobenius_norm",
    "sigma1": "sigma1_ratio",
    "ratio": "sigma1_ratio",
    "erank": "effective_rank",
    "srank": "stable_rank",
    "adjacent": "adjacent_cosine",
    "adjacent_cos": "adjacent_cosine",
}


def resolve_metric(name: str) -> str:
    """A statistic name (or ``loss``) from a name or alias; ValueError naming the choices."""
    key = name.strip().lower().replace("-", "_")
    key = METRIC_ALIASES.get(key, key)
    if key not in METRICS:
        choices = ", ".join([*METRIC_ALIASES, *METRICS])
        raise QueryError(f"unknown metric {name!r}; choose one of {choices}")
    return key


# The x axes a layer-wise curve can be drawn against: layer index, or layer / (layers - 1).
DEPTHS = ("layer", "normalised")


def normalised_depth(layers: Sequence[int], n_layers: int | None = None) -> list[float]:
    """Each layer's position in 0..1, ``layer / (n_layers - 1)``; ``n_layers`` defaults to
    one more than the largest layer given (a curve that covers the whole model)."""
    if n_layers is None:
        n_layers = max(layers, default=-1) + 1
    if any(layer < 0 or layer >= n_layers for layer in layers):
        raise ValueError(f"layers must lie in 0..{n_layers - 1} for a model of {n_layers} layers")
    if n_layers <= 1:
        return [0.0 for _ in layers]
    return [layer / (n_layers - 1) for layer in layers]


def layer_splits(n_layers: int) -> tuple[range, range, range]:
    """The early, middle and late layer indices of a model with ``n_layers`` layers."""
    if n_layers < 0:
        raise ValueError(f"number of layers must not be negative, got {n_layers}")
    if n_layers in PAPER_SPLITS:
        early, middle, _late = PAPER_SPLITS[n_layers]
    else:
        early = n_layers // 3
        middle = n_layers // 3 + (1 if n_layers % 3 else 0)
    return (
        range(0, early),
        range(early, early + middle),
        range(early + middle, n_layers),
    )


def mad(values: Sequence[float]) -> float:
    """Mean absolute difference between adjacent values; NaN with fewer than two values."""
    if len(values) < 2:
        return math.nan
    total = 0.0
    for previous, current in itertools.pairwise(values):
        total += abs(current - previous)
    return total / (len(values) - 1)


@dataclass(frozen=True)
class MadRow:
    """MAD of one run's curve for one projection, over all layers and per depth segment."""

    run_id: str
    projection: str
    all: float
    early: float
    middle: float
    late: float


def mad_row(curve: LayerCurve) -> MadRow:
    values = list(curve.mean)
    early, middle, late = layer_splits(len(values))
    return MadRow(
        run_id=curve.run_id,
        projection=curve.projection,
        all=mad(values),
        early=mad(values[early.start : early.stop]),
        middle=mad(values[middle.start : middle.stop]),
        late=mad(values[late.start : late.stop]),
    )


def mad_table(curves: Sequence[LayerCurve]) -> list[MadRow]:
    """One :class:`MadRow` per curve, in the curves' order."""
    return [mad_row(curve) for curve in curves]


@dataclass(frozen=True)
class RelativeDifference:
    """Mean relative difference of two curves and the layers where it is largest."""

    value: float
    top_layers: list[tuple[int, float]]  # (layer, relative difference), largest first


def relative_difference(a: LayerCurve, b: LayerCurve, top: int = TOP_LAYERS) -> RelativeDifference:
    """Relative difference of curve ``b`` against the baseline curve ``a`` (see module docs)."""
    if list(a.layers) != list(b.layers):
        raise ValueError(
            f"cannot compare curves over different layers: {a.run_id[:12]} has "
            f"{len(a.layers)}, {b.run_id[:12]} has {len(b.layers)}"
        )
    per_layer: list[tuple[int, float]] = []
    for layer, base, other in zip(a.layers, a.mean, b.mean, strict=True):
        if not (math.isfinite(base) and math.isfinite(other)):
            continue
        denominator = abs(base) if base != 0 else ZERO_BASELINE
        per_layer.append((layer, abs(base - other) / denominator))
    if not per_layer:
        return RelativeDifference(math.nan, [])
    value = sum(rd for _, rd in per_layer) / len(per_layer)
    largest = sorted(per_layer, key=lambda item: (-item[1], item[0]))[:top]
    return RelativeDifference(value, largest)


@dataclass(frozen=True)
class RelativeDifferenceRow:
    """Relative difference of one run's curve against the baseline run, for one projection."""

    baseline_run_id: str
    run_id: str
    projection: str
    value: float
    top_layers: list[tuple[int, float]]


@dataclass(frozen=True)
class Comparison:
    """Curves of several runs for one metric, their MADs and differences against the first run."""

    metric: str
    curves: list[LayerCurve]
    mad: list[MadRow]
    relative: list[RelativeDifferenceRow]
    response_tokens: tuple[int, int] | None = None
    # per compared pair (the same pairs as ``relative``) and projection
    significance: list[ProjectionSignificance] = field(default_factory=list)


def relative_rows(
    curves: Sequence[LayerCurve], baseline_run_id: str
) -> list[RelativeDifferenceRow]:
    """Each run's relative difference against the baseline run, projection by projection."""
    baseline = {c.projection: c for c in curves if c.run_id == baseline_run_id}
    rows = []
    for curve in curves:
        base = baseline.get(curve.projection)
        if curve.run_id == baseline_run_id or base is None:
            continue
        if list(base.layers) != list(curve.layers):
            continue  # different depths (e.g. two models): no layer-wise difference
        rd = relative_difference(base, curve)
        rows.append(
            RelativeDifferenceRow(
                baseline_run_id, curve.run_id, curve.projection, rd.value, rd.top_layers
            )
        )
    return rows


def pair_rows(
    curves: Sequence[LayerCurve], pairs: Sequence[tuple[str, str]]
) -> list[RelativeDifferenceRow]:
    """The relative difference of b against a for each (a, b) pair of run ids, projection by
    projection (in a's order), where both have the curve over the same layers."""
    by_key = {(c.run_id, c.projection): c for c in curves}
    rows = []
    for a, b in pairs:
        for curve_a in curves:
            curve_b = by_key.get((b, curve_a.projection))
            if curve_a.run_id != a or curve_b is None or curve_a.layers != curve_b.layers:
                continue
            rd = relative_difference(curve_a, curve_b)
            rows.append(RelativeDifferenceRow(a, b, curve_a.projection, rd.value, rd.top_layers))
    return rows


def compare_runs(
    cache: ResultsCache,
    run_ids: Sequence[str],
    metric: str,
    projections: Sequence[str] | None = None,
    response_tokens: tuple[int, int] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    significance: bool = True,
) -> Comparison:
    """Curves, MAD table, relative differences and significance of cached runs.

    The relative differences and the tests are of every run against the first, or of b against
    a for each (a, b) of ``pairs`` (full run ids; the ``check`` profile compares fixed pairs of
    types). ``response_tokens`` (inclusive range) restricts every run to samples whose
    response length falls in it: the length control the paper's comparisons need, since
    nuclear norm and rank grow with the response length. ``significance=False`` leaves the
    tests out (they read per-sample values when runs are paired).
    """
    curves = cache.curves(run_ids, metric, projections, response_tokens=response_tokens)
    if pairs is None:
        full_ids = [info.id for info in (cache.run(r) for r in run_ids)]
        pairs = [(full_ids[0], other) for other in full_ids[1:]]
    relative = pair_rows(curves, pairs)
    tests = significance_rows(cache, curves, pairs, metric, response_tokens) if significance else []
    return Comparison(metric, curves, mad_table(curves), relative, response_tokens, tests)
