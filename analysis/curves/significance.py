"""Is the difference between two runs' curves real? Tests per layer, corrected across layers.

Why a module of its own: the paper draws two curves and reads a difference off them; whether
that difference is larger than the noise of the samples behind them is a separate question with
its own rules (which test fits which design, how to correct for testing every layer), and the
CLI's ``show``, the explorer's comparison table and the chart's marks must give the same answer.
It is torch-free and cache-free: it works on curves (stored sums) and on per-sample values that
:mod:`layerscope.analysis.results.compare` reads for it.

Which test:

* **Welch's t-test** (unequal variances) for independent samples, from each layer's count, mean
  and standard deviation, i.e. from the stored sums; no sample is read. Effect size: Cohen's d,
  the difference of the means over the pooled standard deviation.
* **Paired tests** when both runs measured the same questions (same data file, or the same
  prompt at every shared sample index: correct and irrelevant responses to the same questions,
  base and instruct models on one file). Per-sample differences b - a at each layer, over the
  samples both runs stored with a finite value at every layer (as the curves leave out a sample
  that is not finite somewhere). The paired t-test, and a **sign-flip permutation test** of the
  mean difference (no normality assumed): every one of the 2^n sign patterns when n <= 16
  (exact), else a seeded Monte Carlo sample of ``permutations`` patterns with the +1 correction
  ``(1 + hits) / (1 + permutations)``. Effect size: d_z, the mean difference over the standard
  deviation of the differences.

p-values are corrected across the layers of one projection with Benjamini-Hochberg (the
q-values); a layer *differs* when its q is below ``alpha`` (0.05). For paired runs the verdict
uses the paired t-test's q; the permutation test's p and q are reported beside it as a check
that does not lean on normality. The t statistics are the textbook formulas here and Student's
t distribution is scipy's (``scipy.special.stdtr``, what ``scipy.stats`` itself evaluates):
importing ``scipy.stats`` cost 0.74 s of CPU, ``scipy.special`` 0.23 s, and a first ``show`` of
a pair paid it. ``tests/test_significance.py`` checks both tests against ``scipy.stats``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerscope.analysis.base.records import LayerCurve

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ALPHA",
    "EXACT_LIMIT",
    "PERMUTATIONS",
    "LayerTest",
    "PairedValues",
    "Pairing",
    "ProjectionSignificance",
    "benjamini_hochberg",
    "decide_pairing",
    "paired_tests",
    "paired_tests_of_projections",
    "sign_flip_p_values",
    "welch_tests",
]

ALPHA = 0.05
# Up to this many pairs the permutation test enumerates every sign pattern (2^16 = 65536).
EXACT_LIMIT = 16
# Monte Carlo sign patterns above EXACT_LIMIT pairs, and the generator's seed (reproducible).
PERMUTATIONS = 9999
SEED = 0
# Sign patterns multiplied at once (bounds memory: CHUNK_CELLS floats per block).
CHUNK_CELLS = 4_000_000

WELCH = "Welch t"
PAIRED = "paired t"


@dataclass(frozen=True)
class LayerTest:
    """One layer's test of run b against run a (difference is b - a)."""

    layer: int
    n_a: int
    n_b: int  # paired: both are the number of pairs
    mean_a: float
    mean_b: float
    difference: float
    statistic: float  # t
    dof: float
    p_value: float
    q_value: float  # Benjamini-Hochberg over the projection's layers
    effect_size: float  # Cohen's d (Welch) or d_z (paired)
    permutation_p: float | None = None  # paired only
    permutation_q: float | None = None


@dataclass(frozen=True)
class Pairing:
    """Whether two runs measured the same samples, and the evidence."""

    paired: bool
    shared: int  # sample indices both runs stored
    reason: str


@dataclass(frozen=True)
class ProjectionSignificance:
    """The layer-wise tests of run b against run a for one projection, and their verdict."""

    run_a: str
    run_b: str
    projection: str
    test: str  # WELCH or PAIRED
    pairing: str  # why this test (one line)
    layers: list[LayerTest]
    permutation: str | None = None  # e.g. "exact, 2^16 sign patterns", paired only
    alpha: float = ALPHA

    @property
    def tested(self) -> list[LayerTest]:
        """Layers with a p-value (enough samples and some spread)."""
        return [t for t in self.layers if not math.isnan(t.q_value)]

    @property
    def differing(self) -> list[int]:
        """Layers whose q-value is below alpha."""
        return [t.layer for t in self.layers if t.q_value < self.alpha]

    @property
    def summary(self) -> str:
        """The verdict without the test's name: "different at 27 of 30 layers"."""
        tested = len(self.tested)
        if not tested:
            return "not testable: too few samples"
        differing = len(self.differing)
        untested = len(self.layers) - tested
        extra = f" ({untested} layer{'s' if untested != 1 else ''} untested)" if untested else ""
        if len(self.layers) == 1:
            return "different" if differing else "not different"
        if not differing:
            return f"no layer differs{extra}"
        if differing == tested > 1:
            return f"different at all {tested} layers{extra}"
        word = "layer" if tested == 1 else "layers"
        return f"different at {differing} of {tested} {word}{extra}"

    @property
    def verdict(self) -> str:
        """One line: "different at 27 of 30 layers (paired t, BH q < 0.05)"."""
        return f"{self.summary} ({self.test}, BH q < {self.alpha:g})"


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg q-values of ``p_values`` (NaN stays NaN and is not counted)."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    q = [math.nan] * len(p_values)
    m = len(finite)
    running = 1.0
    for rank, (p, i) in reversed(list(enumerate(sorted(finite), start=1))):
        running = min(running, p * m / rank)
        q[i] = min(1.0, running)
    return q


def decide_pairing(
    data_a: str | None, data_b: str | None, shared: int, same_prompt: int
) -> Pairing:
    """Paired when at least two sample indices are shared and every shared index carries the
    same prompt in both runs (the same questions); ``data_a``/``data_b`` are the runs' data
    file digests, which only name the reason."""
    if shared >= 2 and same_prompt == shared:
        same_file = data_a is not None and data_a == data_b
        where = "same data file" if same_file else "same questions"
        return Pairing(True, shared, f"paired: {where}, {shared} shared samples")
    if shared and same_prompt < shared:
        why = f"{shared - same_prompt} of {shared} shared indices have other prompts"
    elif shared == 1:
        why = "only 1 shared sample"
    else:
        why = "no shared samples"
    return Pairing(False, shared, f"independent: {why}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """scipy and numpy warn on degenerate layers (no spread); those get NaN or p = 1 here."""
    import numpy as np  # imported by the first test (0.1 s): kept tests need none

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def welch_tests(
    a: LayerCurve, b: LayerCurve, pairing: str = "independent samples", alpha: float = ALPHA
) -> ProjectionSignificance:
    """Welch's t-test of b against a at every layer both curves have, from their stored sums
    (mean, std and count per layer)."""
    index_b = {layer: i for i, layer in enumerate(b.layers)}
    rows = []
    for i, layer in enumerate(a.layers):
        j = index_b.get(layer)
        if j is None:
            continue
        rows.append((layer, a.count[i], b.count[j], a.mean[i], b.mean[j], a.std[i], b.std[j]))
    tests: list[tuple[float, float, float, float]] = []  # t, dof, p, d
    for _layer, n_a, n_b, m_a, m_b, s_a, s_b in rows:
        tests.append(_welch(n_a, n_b, m_a, m_b, s_a, s_b))
    q = benjamini_hochberg([p for _t, _dof, p, _d in tests])
    layers = [
        LayerTest(layer, n_a, n_b, m_a, m_b, m_b - m_a, t, dof, p, q_i, d)
        for (layer, n_a, n_b, m_a, m_b, _s_a, _s_b), (t, dof, p, d), q_i in zip(
            rows, tests, q, strict=True
        )
    ]
    return ProjectionSignificance(
        a.run_id, b.run_id, a.projection, WELCH, pairing, layers, None, alpha
    )


def _welch(
    n_a: int, n_b: int, m_a: float, m_b: float, s_a: float, s_b: float
) -> tuple[float, float, float, float]:
    from scipy import special

    nan = (math.nan, math.nan, math.nan, math.nan)
    if n_a < 2 or n_b < 2 or not all(map(math.isfinite, (m_a, m_b, s_a, s_b))):
        return nan
    pooled = math.sqrt(((n_a - 1) * s_a**2 + (n_b - 1) * s_b**2) / (n_a + n_b - 2))
    if s_a == 0 and s_b == 0:  # no spread: equal means are no difference, others untestable
        return (0.0, math.nan, 1.0, 0.0) if m_a == m_b else nan
    v_a, v_b = s_a**2 / n_a, s_b**2 / n_b
    dof = (v_a + v_b) ** 2 / (v_a**2 / (n_a - 1) + v_b**2 / (n_b - 1))
    t = (m_b - m_a) / math.sqrt(v_a + v_b)
    p = 2 * float(special.stdtr(dof, -abs(t)))  # Student's t survival function, both tails
    d = (m_b - m_a) / pooled if pooled > 0 else math.nan
    return t, dof, p, d


def paired_arrays(
    values_a: Mapping[int, Sequence[float]],
    values_b: Mapping[int, Sequence[float]],
    layers: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (pairs x layers) values of a and b over the samples both have with a finite value
    at every layer (of ``layers`` when given: the curve's, the adjacent cosine having none at
    the last), in sample-index order."""
    import numpy as np  # imported by the first test (0.1 s): kept tests need none

    common = sorted(set(values_a) & set(values_b))
    a = np.array([values_a[i] for i in common], dtype=np.float64).reshape(len(common), -1)
    b = np.array([values_b[i] for i in common], dtype=np.float64).reshape(len(common), -1)
    if a.shape != b.shape:
        raise ValueError(f"paired runs have different layer counts: {a.shape[1]}, {b.shape[1]}")
    if layers is not None and a.shape[1]:
        a, b = a[:, list(layers)], b[:, list(layers)]
    keep = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    return a[keep], b[keep]


def sign_flip_p_values(
    differences: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED
) -> tuple[np.ndarray, str]:
    """Two-sided sign-flip permutation p-values of the mean of each column of ``differences``
    (pairs x layers), and how they were found.

    Under "no difference" each pair's difference is as likely to have either sign. With
    n <= EXACT_LIMIT pairs every one of the 2^n sign patterns is tried and p is the share whose
    |sum| reaches the observed one (exact); above, ``permutations`` random patterns from a
    generator seeded with ``seed`` and p = (1 + hits) / (1 + permutations).
    """
    import numpy as np  # imported by the first test (0.1 s): kept tests need none

    d = np.asarray(differences, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    n, columns = d.shape
    observed = np.abs(d.sum(axis=0))
    threshold = observed * (1 - 1e-10)  # ties (the observed pattern itself) count as hits
    hits = np.zeros(columns, dtype=np.int64)
    exact = n <= EXACT_LIMIT
    total = 2**n if exact else permutations
    rng = None if exact else np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        if exact:
            codes = np.arange(start, start + count, dtype=np.int64)[:, None]
            signs = 1.0 - 2.0 * ((codes >> np.arange(n, dtype=np.int64)) & 1)
        else:
            assert rng is not None
            signs = 1.0 - 2.0 * rng.integers(0, 2, size=(count, n))
        hits += (np.abs(signs @ d) >= threshold).sum(axis=0)
    if exact:
        return hits / total, f"exact, all 2^{n} sign patterns"
    return (1 + hits) / (
        1 + permutations
    ), f"Monte Carlo, {permutations} sign patterns, seed {seed}"


def paired_tests(
    run_a: str,
    run_b: str,
    projection: str,
    values_a: Mapping[int, Sequence[float]],
    values_b: Mapping[int, Sequence[float]],
    pairing: str,
    layers: Sequence[int] | None = None,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> ProjectionSignificance:
    """Paired t-test and sign-flip permutation test of b - a at every layer, over the samples
    both runs stored (per-sample values by layer, keyed by sample index)."""
    (row,) = paired_tests_of_projections(
        run_a,
        run_b,
        [PairedValues(projection, values_a, values_b, layers)],
        pairing,
        permutations=permutations,
        seed=seed,
        alpha=alpha,
    )
    return row


@dataclass(frozen=True)
class PairedValues:
    """One projection's per-sample values of two paired runs (by sample index, then layer), and
    the layers to test (None: all)."""

    projection: str
    values_a: Mapping[int, Sequence[float]]
    values_b: Mapping[int, Sequence[float]]
    layers: Sequence[int] | None = None


def paired_tests_of_projections(
    run_a: str,
    run_b: str,
    projections: Sequence[PairedValues],
    pairing: str,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> list[ProjectionSignificance]:
    """:func:`paired_tests` of several projections of one pair, the very same numbers: the
    permutation tests of projections with as many pairs share one pass over the sign patterns
    (the patterns depend only on the count of pairs and the seed), so drawing them, most of a
    permutation test's time, is paid once per pair of runs, not once per projection."""
    import numpy as np  # imported by the first test (0.1 s): kept tests need none

    arrays = [paired_arrays(p.values_a, p.values_b, p.layers) for p in projections]
    # the permutation p-values, one pass per count of pairs
    permutation: dict[int, tuple[np.ndarray, str]] = {}
    by_count: dict[int, list[int]] = {}
    for k, (a, _b) in enumerate(arrays):
        if a.shape[0] >= 2:
            by_count.setdefault(a.shape[0], []).append(k)
    for members in by_count.values():
        together = np.hstack([arrays[k][1] - arrays[k][0] for k in members])
        p_values, method = sign_flip_p_values(together, permutations, seed)
        start = 0
        for k in members:
            width = arrays[k][0].shape[1]
            permutation[k] = (p_values[start : start + width], method)
            start += width
    return [
        _paired_tests(run_a, run_b, p, a, b, pairing, permutation.get(k), alpha)
        for k, (p, (a, b)) in enumerate(zip(projections, arrays, strict=True))
    ]


def _paired_tests(
    run_a: str,
    run_b: str,
    values: PairedValues,
    a: np.ndarray,
    b: np.ndarray,
    pairing: str,
    permutation: tuple[np.ndarray, str] | None,
    alpha: float,
) -> ProjectionSignificance:
    """One projection's paired tests, its permutation p-values given (None: too few pairs)."""
    import numpy as np
    from scipy import special

    projection, layers = values.projection, values.layers
    n, width = a.shape
    layer_numbers = list(layers) if layers is not None else list(range(width))
    d = b - a
    nan_row = np.full(width, np.nan)
    if n >= 2 and permutation is not None:
        perm, method = permutation
        with _quiet():
            spread = d.std(axis=0, ddof=1)
            mean_d = d.mean(axis=0)
            t_values = mean_d / (spread / math.sqrt(n))  # paired t: one-sample t of b - a
            p_values = 2 * special.stdtr(n - 1, -np.abs(t_values))
            effect = np.where(spread > 0, mean_d / np.where(spread > 0, spread, 1), np.nan)
        none_differ = (spread == 0) & (mean_d == 0)  # identical values: no difference
        p_values = np.where(none_differ, 1.0, p_values)
        t_values = np.where(none_differ, 0.0, t_values)
        effect = np.where(none_differ, 0.0, effect)
    else:
        t_values = p_values = effect = perm = nan_row
        method = "too few pairs"
    q = benjamini_hochberg([float(p) for p in p_values])
    perm_q = benjamini_hochberg([float(p) for p in perm])
    tests = [
        LayerTest(
            layer=layer_numbers[k],
            n_a=n,
            n_b=n,
            mean_a=float(a[:, k].mean()) if n else math.nan,
            mean_b=float(b[:, k].mean()) if n else math.nan,
            difference=float(d[:, k].mean()) if n else math.nan,
            statistic=float(t_values[k]),
            dof=float(n - 1) if n >= 2 else math.nan,
            p_value=float(p_values[k]),
            q_value=q[k],
            effect_size=float(effect[k]),
            permutation_p=float(perm[k]),
            permutation_q=perm_q[k],
        )
        for k in range(width)
    ]
    return ProjectionSignificance(run_a, run_b, projection, PAIRED, pairing, tests, method, alpha)
