"""From stored sums to curves: mean, standard deviation and 95% confidence interval by layer.

Why apart from the cache: the cache's job is to keep, per run and layer, the count, sum and sum
of squares of every statistic (:class:`~layerscope.analysis.records.LayerSums`) and to answer
quickly; what those sums mean statistically (sample variance, Student's t interval) is part of
the comparisons (:mod:`layerscope.analysis.compare`), which own this module. Keeping the
arithmetic here means a change to the interval never touches SQL. The t quantile is scipy's
(imported when the first curve is made, so importing this module stays cheap); the tests of
differences between curves are :mod:`layerscope.analysis.significance`.
"""

from __future__ import annotations

import functools
import math

from layerscope.analysis.records import LayerCurve, LayerSums

__all__ = ["curve_from_sums", "t_critical_975"]


@functools.lru_cache(maxsize=4096)
def t_critical_975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom (scipy's
    quantile; NaN below one degree of freedom)."""
    if dof < 1:
        return math.nan
    from scipy.stats import t as student_t  # imported when a curve is first made (~0.2 s)

    return float(student_t.ppf(0.975, dof))


def curve_from_sums(sums: LayerSums) -> LayerCurve:
    """A curve from per-layer (count, sum, sum of squares) of the values it averages."""
    layers, means, stds, cis, counts = [], [], [], [], []
    for layer in sorted(sums.sums):
        count, total, squares = sums.sums[layer]
        mean = total / count if count else math.nan
        if count >= 2:
            variance = max(0.0, (squares - total * total / count) / (count - 1))
            std = math.sqrt(variance)
            ci = t_critical_975(count - 1) * std / math.sqrt(count)
        else:
            std = ci = math.nan
        layers.append(int(layer))
        counts.append(int(count))
        means.append(mean)
        stds.append(std)
        cis.append(ci)
    return LayerCurve(
        sums.run_id, sums.projection, layers, means, stds, cis, counts, sums.excluded_nonfinite
    )
