"""From stored sums to curves: mean, standard deviation and 95% confidence interval by layer.

Why apart from the cache: the cache's job is to keep, per run and layer, the count, sum and sum
of squares of every statistic (:class:`~layerscope.analysis.records.LayerSums`) and to answer
quickly; what those sums mean statistically (sample variance, Student's t interval) is part of
the comparisons (:mod:`layerscope.analysis.compare`), which own this module. Keeping the
arithmetic here means a change to the interval never touches SQL, and the t table needs no scipy.
"""

from __future__ import annotations

import math

from layerscope.analysis.records import LayerCurve, LayerSums

__all__ = ["curve_from_sums", "t_critical_975"]

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z_975 = 1.959963984540054


def t_critical_975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom.

    A table up to 30, then the Cornish-Fisher expansion around the normal quantile, which is
    accurate to better than 1e-4 there (no scipy needed to browse results).
    """
    if dof < 1:
        return math.nan
    if dof <= len(_T_975):
        return _T_975[dof - 1]
    z = _Z_975
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


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
