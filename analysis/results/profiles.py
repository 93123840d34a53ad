"""Ready-made studies: which response types to compute and which pairs of them to compare.

Why in ``analysis/``: ``layerscope check`` (a quick profile of a model) and any other front end
that offers it must compute the same types and report the same differences; the choice of what a
profile compares is part of the method, not of rendering. The pairs are the paper's two
questions: fast vs slow thinking (bare answers against detailed chains of thought) and correct
vs irrelevant responses, for both kinds of answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from layerscope.analysis.base.errors import LayerscopeError

__all__ = ["CHECK_PAIRS", "CHECK_TYPES", "ProfileError", "check_pairs", "check_types"]

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
