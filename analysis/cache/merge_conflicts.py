"""Conflicts: a sample two caches hold with different values, and how values are compared.

Why a module of its own: what counts as the same value is the one judgement a merge
(:mod:`.merging`) makes about numbers, and it is made here alone: numbers agree when equal within
a relative tolerance (float32 storage keeps about 7 digits, so recomputing on another device in
float32 agrees to 1e-5; bfloat16 runs computed twice do not, and are reported); NaN agrees with
NaN and with an empty value; lists agree element by element. A sample that differs is one
:class:`Conflict`: its first differing value (in the order :mod:`.stored_samples` names them),
with how many differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from layerscope.analysis.cache.stored_samples import StoredSample

__all__ = ["Conflict", "compare_samples"]


@dataclass(frozen=True)
class Conflict:
    """A sample stored in both caches with different values (the destination keeps its own)."""

    run_id: str
    index: int
    what: str  # which value: "loss", "nuclear layer 3 q", "spectrum layer 0 v", ...
    destination: Any
    source: Any
    differing: int = 1  # how many of the sample's values differ

    def line(self) -> str:
        more = f" (and {self.differing - 1} more values differ)" if self.differing > 1 else ""
        return (
            f"conflict: run {self.run_id[:12]} sample {self.index}: {self.what}: "
            f"destination {_shown(self.destination)}, source {_shown(self.source)}{more}"
        )


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.9g}"
    if isinstance(value, list):
        inner = ", ".join(_shown(v) for v in value[:4])
        return f"[{inner}{', ...' if len(value) > 4 else ''}]"
    return repr(value)


def _same(a: Any, b: Any, rtol: float) -> bool:
    if a == b:
        return True  # the common case, lists included (NaN is not equal to itself: below)
    if isinstance(a, list) or isinstance(b, list):
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            return False
        return all(_same(x, y, rtol) for x, y in zip(a, b, strict=True))
    a_num = isinstance(a, (int, float)) or a is None
    b_num = isinstance(b, (int, float)) or b is None
    if a_num and b_num and (isinstance(a, float) or isinstance(b, float) or a is None):
        x = math.nan if a is None else float(a)
        y = math.nan if b is None else float(b)
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        if math.isinf(x) or math.isinf(y):
            return x == y
        return abs(x - y) <= rtol * max(abs(x), abs(y))
    return bool(a == b)


def compare_samples(
    run_id: str, destination: StoredSample, source: StoredSample, rtol: float
) -> Conflict | None:
    """The conflict between the destination's and the source's copies of a sample, or None when
    every value agrees within ``rtol``."""
    keys = list(dict.fromkeys([*destination.values, *source.values]))
    differing = [
        key for key in keys if not _same(destination.values.get(key), source.values.get(key), rtol)
    ]
    if not differing:
        return None
    first = differing[0]
    return Conflict(
        run_id,
        destination.result.index,
        first,
        destination.values.get(first),
        source.values.get(first),
        len(differing),
    )
