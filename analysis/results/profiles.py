"""Ready-made studies: which response types to compute and which pairs of them to compare.

Why in ``analysis/``: ``layerscope check`` (a quick profile of a model) and any other front end
that offers it must compute the same types and report the same differences; the choice of what a
profile compares is part of the method, not of rendering. The pairs are the paper's two
questions: fast vs slow thinking (bare answers against detailed chains of thought) and correct
vs irrelevant responses, for both kinds of answer.

Why in rounds under a time budget: a quick check must be quick on whatever machine it runs on,
and how long a sample takes is only known once one has been computed. So the samples are taken
in rounds (2, 4, 8, ... per type, up to the limit): every round leaves a whole profile, each
round computes only the samples the last did not (they are cached), and a round is begun only
when the rate measured so far says it fits in what is left of the budget
(:func:`next_round_fits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import LayerCurve

__all__ = [
    "CHECK_PAIRS",
    "CHECK_TYPES",
    "FIRST_ROUND",
    "ProfileError",
    "check_pairs",
    "check_types",
    "next_round_cost",
    "projection_means",
    "rounds",
]

# Samples per type of a profile's first round: the fewest a paired test can use.
FIRST_ROUND = 2

CHECK_TYPES = ("none_cot", "detailed_cot", "none_cot_irrelevant", "detailed_cot_irrelevant")
# (baseline, other): the relative difference of other against baseline is reported.
CHECK_PAIRS = (
    ("none_cot", "detailed_cot"),
    ("none_cot", "none_cot_irrelevant"),
    ("detailed_cot", "detailed_cot_irrelevant"),
)


class ProfileError(LayerscopeError, ValueError):
    """A dataset a profile cannot be run on; one line naming the dataset."""


def check_types(available: Sequence[str], dataset: str) -> list[str]:
    """The profile's response types that a dataset has, in the profile's order; ProfileError
    naming the dataset when it has none of them."""
    types = [t for t in CHECK_TYPES if t in available]
    if not types:
        raise ProfileError(
            f"{dataset} has none of the response types check compares ({', '.join(CHECK_TYPES)})"
        )
    return types


def check_pairs(run_by_type: Mapping[str, str]) -> list[tuple[str, str]]:
    """The profile's pairs as run ids, for the types that were computed."""
    return [
        (run_by_type[a], run_by_type[b])
        for a, b in CHECK_PAIRS
        if a in run_by_type and b in run_by_type
    ]


def rounds(limit: int) -> list[int]:
    """Samples per type after each round: doubling from :data:`FIRST_ROUND` to ``limit``."""
    sizes = []
    size = min(FIRST_ROUND, limit)
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


def next_round_cost(
    seconds_per_sample: Mapping[str, float], types: Sequence[str], done: int, target: int
) -> float:
    """Seconds the round from ``done`` to ``target`` samples per type should take, at each
    type's measured seconds per sample (a type not measured yet, its samples all cached so
    far, at the slowest measured rate); infinite when nothing was measured."""
    if not seconds_per_sample:
        return math.inf
    slowest = max(seconds_per_sample.values())
    return sum(seconds_per_sample.get(t, slowest) for t in types) * (target - done)


def projection_means(curves: Sequence[LayerCurve], name: str) -> list[LayerCurve]:
    """Per run, the mean of its projections' curves, layer by layer (projection ``name``): the
    one curve a one-screen profile draws. The count is the fewest samples of any projection;
    the spread is not a spread of samples, so it is NaN."""
    by_run: dict[str, list[LayerCurve]] = {}
    for curve in curves:
        by_run.setdefault(curve.run_id, []).append(curve)
    means = []
    for run_id, own in by_run.items():
        layers = [layer for layer in own[0].layers if all(layer in c.layers for c in own)]
        at = [{layer: i for i, layer in enumerate(c.layers)} for c in own]
        means.append(
            LayerCurve(
                run_id,
                name,
                layers,
                [sum(c.mean[a[layer]] for c, a in zip(own, at, strict=True)) / len(own)
                 for layer in layers],
                [math.nan] * len(layers),
                [min(c.count[a[layer]] for c, a in zip(own, at, strict=True)) for layer in layers],
                max(c.excluded_nonfinite for c in own),
            )
        )  # fmt: skip
    return means
