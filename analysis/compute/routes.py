"""The cost model: which exact route each statistic of each projection takes, and why.

Why its own module: every statistic of a gradient ``G = D^T X`` (T positions, rows x cols) can
be computed exactly in more than one way, and which way is cheapest depends on the shape, on T
and on the model's depth L. Picked once, for the shapes a benchmark happened to use, a route
that wins at 2 layers and 64 tokens loses by 10x at 30 layers and 500 tokens (the layer-by-layer
cosines from T-by-T factor products cost L^2 T^2 (rows + cols), forming each G once and taking
one Gram matrix costs L T rows cols + L^2 rows cols). So the choice is made here, per sample
length and per projection, from operation counts, and nowhere else; the engine asks
:func:`plan_batch` at the start of each batch and follows it.

The routes (each exact; tests force every one and hold it to the full-SVD reference):

- **spectrum** ``factors``: thin QRs of ``D^T`` and ``X^T`` (X's shared by the projections
  that read the same input) and ``svdvals`` of the core, T-by-T where T < min(rows, cols); where
  T lies between rows and cols only the longer side is factored (rows x T for GQA's k and v).
  ``formed``: ``svdvals(G)`` of the formed matrix.
- **cosines** ``factors``: ``<G_i, G_j> = sum((D_i D_j^T) * (X_i X_j^T))``, the products of a
  new layer with all earlier layers of its projection as a few large matrix products, each
  ``X_i X_j^T`` computed once for the projections that share the input. ``formed``: each G
  formed once (into a buffer of L matrices: it costs memory, L x rows x cols per sample) and one
  Gram matrix of them at the sample's end. Formed routes are taken only within a memory budget.
- **entries** (mean, max, min): the mean always from the factors in float64; max and min from a
  formed G where one exists, else from G formed a block of rows at a time.

Costs are in "GEMM-equivalent operations": a LAPACK QR or SVD does fewer operations per second
than a matrix product, so their counts are weighted by how much slower they run (measured on a
CPU with one thread: a Householder QR at about half the speed of a matrix product, ``svdvals``
at about a sixth). The weights only have to rank routes, not predict seconds.

No torch here: ``layerscope describe --routes`` and the benchmarks use it without loading a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CPU_WEIGHTS",
    "GPU_WEIGHTS",
    "RAW",
    "ROUTE_CHOICES",
    "ProjectionPlan",
    "ProjectionShape",
    "SamplePlan",
    "Weights",
    "cosine_costs",
    "explain",
    "plan_batch",
    "plan_sample",
    "shapes_of",
    "spectrum_costs",
    "weights_for",
]

Route = Literal["factors", "formed"]
ROUTE_CHOICES = ("auto", "factors", "formed")


@dataclass(frozen=True)
class Weights:
    """How much slower than a float32 matrix product each kind of operation runs, per
    operation. The defaults were measured on a CPU with one thread (torch 2.13, OpenBLAS);
    :data:`RAW` counts plain operations (for projections such as benchmarks/gpu_projection.py)."""

    qr: float = 2.0
    svd: float = 6.0
    float64: float = 2.0  # the Gram and the Hadamard sums accumulate in float64


CPU_WEIGHTS = Weights()
# Not measured (no GPU was at hand): cuSOLVER's QR and SVD of the sizes here run at a small
# fraction of a GPU's matrix-product rate, and float64 on data-centre GPUs at about float32's
# (non-tensor-core) rate. benchmarks/gpu_check.sh measures what a GPU does.
GPU_WEIGHTS = Weights(qr=8.0, svd=40.0, float64=1.0)
RAW = Weights(1.0, 1.0, 1.0)


def weights_for(device_type: str) -> Weights:
    """The operation weights of a device type ("cuda", "cpu", ...)."""
    return GPU_WEIGHTS if device_type == "cuda" else CPU_WEIGHTS


# Projections that read the same input (one X, one QR of it, one X_i X_j^T for all of them).
SHARED_INPUTS = (("q", "k", "v"), ("gate", "up"))


@dataclass(frozen=True)
class ProjectionShape:
    """What the cost of one projection depends on: its matrix and how many layers have it."""

    rows: int
    cols: int
    layers: int
    element_bytes: int = 4  # of the working dtype (float32, or float64 for float64 models)

    @property
    def entries(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class ProjectionPlan:
    """The routes of one projection for one sample, with the costs that chose them."""

    spectrum: Route
    cosines: Route | None  # None: cosines not computed
    entries: Literal["formed", "blocks"] | None  # None: entry statistics not computed
    cost: float  # GEMM-equivalent operations of the chosen routes, all layers
    alternative_cost: float  # the same with the cosine route not chosen (or the other spectrum)
    formed_bytes: int  # memory the formed cosine route keeps for this sample (0 for factors)
    reason: str

    @property
    def keeps_gradients(self) -> bool:
        return self.cosines == "formed"

    @property
    def forms_gradients(self) -> bool:
        """Whether each G is formed whole (for the spectrum or the cosines)."""
        return self.cosines == "formed" or self.spectrum == "formed"


@dataclass(frozen=True)
class SamplePlan:
    """The routes of every projection for one sample of ``positions`` measured positions."""

    positions: int
    projections: Mapping[str, ProjectionPlan] = field(default_factory=dict)

    def __getitem__(self, projection: str) -> ProjectionPlan:
        return self.projections[projection]

    @property
    def formed_bytes(self) -> int:
        return sum(p.formed_bytes for p in self.projections.values())


def _gemm(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def _qr(m: int, n: int, weights: Weights) -> float:
    """Householder R of an m x n matrix."""
    big, small = max(m, n), min(m, n)
    return weights.qr * (2.0 * big * small * small - 2.0 / 3.0 * small**3)


def _svdvals(m: int, n: int, weights: Weights) -> float:
    big, small = max(m, n), min(m, n)
    return weights.svd * (4.0 * big * small * small - 4.0 / 3.0 * small**3)


def _sharing(projection: str) -> int:
    for group in SHARED_INPUTS:
        if projection in group:
            return len(group)
    return 1


def spectrum_costs(
    shape: ProjectionShape, positions: int, sharing: int = 1, weights: Weights = CPU_WEIGHTS
) -> dict[str, float]:
    """Cost of one matrix's singular values by each route; ``formed`` excludes forming G.

    ``factors`` (the R of each side longer than T, and the SVD of the min(T, rows) x
    min(T, cols) core) is absent where it does not apply: T >= rows and T >= cols.
    """
    t, rows, cols = positions, shape.rows, shape.cols
    costs = {"formed": _svdvals(rows, cols, weights)}
    if t < max(rows, cols):
        left, right = min(t, rows), min(t, cols)
        costs["factors"] = (
            (_qr(rows, t, weights) if t < rows else 0.0)
            + (_qr(cols, t, weights) / sharing if t < cols else 0.0)
            + _gemm(left, right, t)
            + _svdvals(left, right, weights)
        )
    return costs


def cosine_costs(
    shape: ProjectionShape, positions: int, sharing: int = 1, weights: Weights = CPU_WEIGHTS
) -> dict[str, float]:
    """Cost of one projection's layer-by-layer inner products, all layers, by each route.

    ``formed`` excludes forming each G (see :func:`plan_sample`, which adds it where nothing
    else forms G).
    """
    t, layers = positions, shape.layers
    pairs = layers * (layers + 1) / 2
    per_pair = _gemm(t, t, shape.rows) + _gemm(t, t, shape.cols) / sharing + weights.float64 * t * t
    gram = weights.float64 * 2.0 * pairs * shape.entries
    return {"factors": pairs * per_pair, "formed": gram}


def _forming(shape: ProjectionShape, positions: int) -> float:
    return _gemm(shape.rows, shape.cols, positions)


def plan_sample(
    shapes: Mapping[str, ProjectionShape],
    positions: int,
    *,
    cosines: bool,
    entry_statistics: bool,
    forced: str = "auto",
    formed_allowed: Iterable[str] | None = None,
    weights: Weights = CPU_WEIGHTS,
) -> SamplePlan:
    """The cheapest exact routes for one sample with ``positions`` measured positions.

    ``forced`` is ``auto`` (cheapest), ``factors`` or ``formed`` (every statistic by that route
    where it applies: the spectrum's factor route needs T < max(rows, cols)). ``formed_allowed``
    names the projections whose cosines may keep formed gradients (the memory budget; None: all).
    """
    allowed = set(shapes) if formed_allowed is None else set(formed_allowed)
    plans: dict[str, ProjectionPlan] = {}
    for projection, shape in shapes.items():
        plans[projection] = _plan_projection(
            projection,
            shape,
            positions,
            cosines=cosines,
            entry_statistics=entry_statistics,
            forced=forced,
            may_keep=projection in allowed,
            weights=weights,
        )
    return SamplePlan(positions, plans)


def _plan_projection(
    projection: str,
    shape: ProjectionShape,
    positions: int,
    *,
    cosines: bool,
    entry_statistics: bool,
    forced: str,
    may_keep: bool,
    weights: Weights,
) -> ProjectionPlan:
    sharing = _sharing(projection)
    spectrum = spectrum_costs(shape, positions, sharing, weights)
    layers = shape.layers
    forming = _forming(shape, positions)
    # Entry statistics form G anyway (whole, or in blocks): forming is then already paid for.
    entries_cost = forming if entry_statistics else 0.0

    def total(cosine_route: Route | None) -> tuple[float, Route]:
        formed_anyway = cosine_route == "formed"
        formed_spectrum = spectrum["formed"] + (
            0.0 if formed_anyway or entry_statistics else forming
        )
        if forced == "formed" or "factors" not in spectrum:
            spectrum_route: Route = "formed"
        elif forced == "factors":
            spectrum_route = "factors"
        else:
            spectrum_route = "factors" if spectrum["factors"] <= formed_spectrum else "formed"
        per_matrix = spectrum["factors"] if spectrum_route == "factors" else formed_spectrum
        cost = layers * (per_matrix + entries_cost)
        if cosine_route is not None:
            cosine = cosine_costs(shape, positions, sharing, weights)[cosine_route]
            if cosine_route == "formed" and not entry_statistics and spectrum_route == "factors":
                cost += layers * forming
            cost += cosine
        return cost, spectrum_route

    formed_bytes = layers * shape.entries * shape.element_bytes
    entries: Literal["formed", "blocks"] | None = "blocks" if entry_statistics else None
    if not cosines:
        cost, spectrum_route = total(None)
        if spectrum_route == "formed":
            entries = "formed" if entry_statistics else None
            other = spectrum.get("factors", float("inf"))
        else:
            other = spectrum["formed"] + (0.0 if entry_statistics else forming)
        alternative = layers * (other + entries_cost)
        reason = _spectrum_reason(spectrum_route, positions, shape, forced)
        return ProjectionPlan(spectrum_route, None, entries, cost, alternative, 0, reason)

    factors_cost, factors_spectrum = total("factors")
    formed_cost, formed_spectrum = total("formed")
    if forced == "factors":
        choice: Route = "factors"
        reason = "forced (--routes factors)"
    elif forced == "formed":
        choice = "formed"
        reason = "forced (--routes formed)"
    elif formed_cost < factors_cost and may_keep:
        choice = "formed"
        reason = f"formed is {factors_cost / formed_cost:.1f}x cheaper"
    elif formed_cost < factors_cost:
        choice = "factors"
        reason = (
            f"formed would be {factors_cost / formed_cost:.1f}x cheaper but its "
            f"{_bytes(formed_bytes)} do not fit the memory budget"
        )
    else:
        choice = "factors"
        reason = f"factors are {formed_cost / max(factors_cost, 1.0):.1f}x cheaper"
    if choice == "formed":
        cost, alternative, spectrum_route = formed_cost, factors_cost, formed_spectrum
        if entry_statistics:
            entries = "formed"
    else:
        cost, alternative, spectrum_route = factors_cost, formed_cost, factors_spectrum
        if entry_statistics and spectrum_route == "formed":
            entries = "formed"
        formed_bytes = 0
    return ProjectionPlan(spectrum_route, choice, entries, cost, alternative, formed_bytes, reason)


def _spectrum_reason(route: Route, positions: int, shape: ProjectionShape, forced: str) -> str:
    if positions >= max(shape.rows, shape.cols):
        return f"T={positions} >= rows and cols: nothing to factor"
    if forced != "auto":
        return f"forced (--routes {forced})"
    return f"spectrum by {route} is cheaper at T={positions}"


def plan_batch(
    shapes: Mapping[str, ProjectionShape],
    positions: Sequence[int],
    *,
    cosines: bool,
    entry_statistics: bool,
    forced: str = "auto",
    budget_bytes: int | None = None,
    weights: Weights = CPU_WEIGHTS,
) -> list[SamplePlan]:
    """One :class:`SamplePlan` per sample of a batch, the formed cosine routes within budget.

    Where keeping every formed gradient the cost model prefers would exceed ``budget_bytes``
    (None: no limit), the largest savings per byte keep theirs and the rest use factors.
    """
    plans = [
        plan_sample(
            shapes,
            p,
            cosines=cosines,
            entry_statistics=entry_statistics,
            forced=forced,
            weights=weights,
        )
        for p in positions
    ]
    if budget_bytes is None or forced != "auto":
        return plans
    wanted = [
        (plan[name].alternative_cost - plan[name].cost, plan[name].formed_bytes, row, name)
        for row, plan in enumerate(plans)
        for name in shapes
        if plan[name].cosines == "formed"
    ]
    if sum(item[1] for item in wanted) <= budget_bytes:
        return plans
    wanted.sort(key=lambda item: item[0] / max(item[1], 1), reverse=True)
    allowed: dict[int, set[str]] = {row: set() for row in range(len(plans))}
    left = budget_bytes
    for _saving, size, row, name in wanted:
        if size <= left:
            allowed[row].add(name)
            left -= size
    return [
        plan_sample(
            shapes,
            p,
            cosines=cosines,
            entry_statistics=entry_statistics,
            forced=forced,
            formed_allowed=allowed[row],
            weights=weights,
        )
        for row, p in enumerate(positions)
    ]


def shapes_of(
    targets: Iterable[tuple[str, int, int]], element_bytes: int = 4
) -> dict[str, ProjectionShape]:
    """Projection shapes from ``(projection, rows, cols)`` of every target matrix.

    A projection whose layers differ in shape (rare) is costed at its largest.
    """
    layers: dict[str, int] = {}
    rows: dict[str, int] = {}
    cols: dict[str, int] = {}
    for projection, r, c in targets:
        layers[projection] = layers.get(projection, 0) + 1
        rows[projection] = max(rows.get(projection, 0), r)
        cols[projection] = max(cols.get(projection, 0), c)
    return {p: ProjectionShape(rows[p], cols[p], layers[p], element_bytes) for p in layers}


def explain(
    shapes: Mapping[str, ProjectionShape],
    lengths: Sequence[int],
    *,
    cosines: bool = True,
    entry_statistics: bool = True,
    forced: str = "auto",
    budget_bytes: int | None = None,
    weights: Weights = CPU_WEIGHTS,
) -> list[str]:
    """A line per length and projection: the routes chosen, their cost, and why."""
    lines = []
    for positions in lengths:
        plan = plan_batch(
            shapes,
            [positions],
            cosines=cosines,
            entry_statistics=entry_statistics,
            forced=forced,
            budget_bytes=budget_bytes,
            weights=weights,
        )[0]
        for name, shape in shapes.items():
            chosen = plan[name]
            lines.append(
                f"T={positions:<5} {name:<5} {shape.layers}x{shape.rows}x{shape.cols}  "
                f"spectrum {chosen.spectrum:<7} cosines {chosen.cosines or '-':<7} "
                f"entries {chosen.entries or '-':<7} {_operations(chosen.cost)} "
                f"(other {_operations(chosen.alternative_cost)})  {chosen.reason}"
            )
    return lines


def _operations(value: float) -> str:
    if value == float("inf"):
        return "n/a"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= size:
            return f"{value / size:.1f}{unit}op"
    return f"{value:.0f}op"


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
