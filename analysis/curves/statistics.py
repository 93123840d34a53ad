"""From stored sums to curves: mean, standard deviation and 95% confidence interval by layer.

Why apart from the cache: the cache's job is to keep, per run and layer, the count, sum and sum
of squares of every statistic (:class:`~layerscope.analysis.base.records.LayerSums`) and to answer
quickly; what those sums mean statistically (sample variance, Student's t interval) is part of
the comparisons (:mod:`layerscope.analysis.results.compare`), which own this module. Keeping the
arithmetic here means a change to the interval never touches SQL. The t quantile is scipy's
(imported when the first curve is made, so importing this module stays cheap); the tests of
differences between curves are :mod:`layerscope.analysis.curves.significance`.
"""

from __future__ import annotations

import functools
import math

from layerscope.analysis.base.records import LayerCurve, LayerSums

__all__ = ["ci95", "curve_from_sums", "t_critical_975"]


@functools.lru_cache(maxsize=4096)
def t_critical_975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom (scipy's
    quantile; NaN below one degree of freedom)."""
    if dof < 1:
        return math.nan
    from scipy import special  # scipy.special alone: a third of scipy.stats' import

    return float(special.stdtrit(dof, 0.975))


def ci95(curve: LayerCurve) -> list[float]:
    """The half-width of the 95% t confidence interval of the curve's mean at each layer (NaN
    below two samples). Asked for only where an interval is shown (a band, a JSON record, the
    loss table): the t quantile costs scipy.special's import, about 0.2 s of CPU, which ``show`` and
    ``table`` otherwise never pay."""
    return [
        t_critical_975(n - 1) * s / math.sqrt(n) if n >= 2 else math.nan
        for s, n in zip(curve.std, curve.count, strict=True)
    ]


def curve_from_sums(sums: LayerSums) -> LayerCurve:
    """A curve from per-layer (count, sum, sum of squares) of the values it averages."""
    layers, means, stds, counts = [], [], [], []
    for layer in sorted(sums.sums):
        count, total, squares = sums.sums[layer]
        mean = total / count if count else math.nan
        if count >= 2:
            variance = max(0.0, (squares - total * total / count) / (count - 1))
            std = math.sqrt(variance)
        else:
            std = math.nan
        layers.append(int(layer))
        counts.append(int(count))
        means.append(mean)
        stds.append(std)
    return LayerCurve(
        sums.run_id, sums.projection, layers, means, stds, counts, sums.excluded_nonfinite
    )
