"""Is the difference real? The tests between two runs against scipy and exact enumeration.

Runs are stored in a real cache with chosen per-sample values (one statistic, one projection),
so the numbers pass through the same sums and reads as in ``show`` and the explorer; every
p-value is checked against scipy on the raw values, the permutation test against an explicit
enumeration of sign patterns, Benjamini-Hochberg against ``scipy.stats.false_discovery_control``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from cache_helpers import batch, make_result, run_id_for, targets
from scipy import stats

from layerscope.analysis.base.records import LayerCurve, RunHeader, Sample
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.curves.significance import (
    PAIRED,
    WELCH,
    PairedValues,
    benjamini_hochberg,
    decide_pairing,
    paired_tests,
    paired_tests_of_projections,
    sign_flip_p_values,
    welch_tests,
)
from layerscope.analysis.results.compare import compare_runs

LAYERS = 4


def as_stored(values: np.ndarray) -> np.ndarray:
    """Values as the cache keeps statistics (float32), for the references."""
    return values.astype(np.float32).astype(np.float64)


def store(
    cache: ResultsCache,
    name: str,
    values: np.ndarray,
    *,
    questions: str = "shared",
    data: str = "file-a",
    indices: list[int] | None = None,
) -> str:
    """A complete run whose sample i has nuclear norm ``values[i, layer]`` for projection q.
    Runs with the same ``questions`` ask the same question at the same index."""
    run_id = run_id_for(name)
    count = len(values)
    indices = indices if indices is not None else list(range(count))
    cache.begin_run(
        RunHeader(
            run_id,
            model="synthetic",
            dataset="math",
            response_type=name,
            mode="base",
            samples_total=count,
            targets=targets(values.shape[1], ("q",)),
            settings={"data_sha256": data},
            provenance={},
        )
    )
    samples = {i: Sample(i, f"{questions} question {i}?", f"{name} answer {i}") for i in indices}
    results = [
        make_result(
            index,
            values.shape[1],
            ("q",),
            cosines=False,
            overrides={
                (layer, "q"): {"nuclear_norm": float(values[row, layer])}
                for layer in range(values.shape[1])
            },
        )
        for row, index in enumerate(indices)
    ]
    cache.write_batch(run_id, batch(results), samples)
    cache.finish_run(run_id, "complete")
    return run_id


def significance_of(cache: ResultsCache, a: str, b: str):
    comparison = compare_runs(cache, [a, b], "nuclear_norm")
    [row] = comparison.significance
    return row


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "cache.duckdb")


def test_welch_from_stored_sums_matches_scipy_on_the_raw_values(cache):
    rng = np.random.default_rng(3)
    a = rng.normal(100, 10, size=(30, LAYERS))
    b = rng.normal(104, 4, size=(17, LAYERS)) + np.arange(LAYERS)
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "a", a, questions="first", data="file-a")
    run_b = store(cache, "b", b, questions="second", data="file-b")
    row = significance_of(cache, run_a, run_b)
    assert row.test == WELCH
    assert row.pairing.startswith("independent")
    reference = stats.ttest_ind(b, a, axis=0, equal_var=False)
    q_reference = stats.false_discovery_control(reference.pvalue, method="bh")
    for k, layer in enumerate(row.layers):
        assert (layer.n_a, layer.n_b) == (30, 17)
        assert layer.statistic == pytest.approx(reference.statistic[k], rel=1e-6)
        assert layer.dof == pytest.approx(reference.df[k], rel=1e-6)
        assert layer.p_value == pytest.approx(reference.pvalue[k], rel=1e-6)
        assert layer.q_value == pytest.approx(q_reference[k], rel=1e-6)
        pooled = math.sqrt((29 * a[:, k].var(ddof=1) + 16 * b[:, k].var(ddof=1)) / (30 + 17 - 2))
        assert layer.effect_size == pytest.approx((b[:, k].mean() - a[:, k].mean()) / pooled)
        assert layer.permutation_p is None


def test_paired_t_and_exact_permutation_on_the_same_questions(cache):
    rng = np.random.default_rng(5)
    n = 9
    a = rng.normal(50, 10, size=(n, LAYERS))
    b = a + rng.normal([3, 0.2, -2, 6], 3, size=(n, LAYERS))
    # another data file (irrelevant responses), the same questions at the same indices
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "none_cot", a, data="correct")
    run_b = store(cache, "none_cot_irrelevant", b, data="shuffled")
    row = significance_of(cache, run_a, run_b)
    assert row.test == PAIRED
    assert row.pairing == f"paired: same questions, {n} shared samples"
    assert row.permutation == f"exact, all 2^{n} sign patterns"
    reference = stats.ttest_rel(b, a, axis=0)
    d = b - a
    for k, layer in enumerate(row.layers):
        assert layer.n_a == layer.n_b == n
        assert layer.difference == pytest.approx(d[:, k].mean())
        assert layer.statistic == pytest.approx(reference.statistic[k], rel=1e-6)
        assert layer.p_value == pytest.approx(reference.pvalue[k], rel=1e-6)
        assert layer.effect_size == pytest.approx(d[:, k].mean() / d[:, k].std(ddof=1))
        # every sign pattern, written out
        observed = abs(d[:, k].sum())
        hits = sum(
            abs(sum(s * x for s, x in zip(signs, d[:, k], strict=True))) >= observed - 1e-9
            for signs in itertools.product((1, -1), repeat=n)
        )
        assert layer.permutation_p == pytest.approx(hits / 2**n, abs=1e-12)
    assert [t.permutation_q for t in row.layers] == pytest.approx(
        list(stats.false_discovery_control([t.permutation_p for t in row.layers]))
    )


def test_permutation_matches_scipy_permutation_test_exactly():
    rng = np.random.default_rng(11)
    d = rng.normal(0.4, 1, size=12)
    [p], method = sign_flip_p_values(d[:, None])
    reference = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    )
    assert method == "exact, all 2^12 sign patterns"
    assert p == pytest.approx(reference.pvalue, abs=1e-12)


def test_monte_carlo_permutation_is_seeded_and_counts_the_observed_pattern():
    rng = np.random.default_rng(2)
    d = np.abs(rng.normal(1, 0.1, size=(40, 1)))  # all positive: the most extreme pattern
    p, method = sign_flip_p_values(d, permutations=999, seed=7)
    assert method == "Monte Carlo, 999 sign patterns, seed 7"
    assert p[0] == pytest.approx(1 / 1000)  # (1 + 0 hits) / (1 + 999), never 0
    noisy = rng.normal(0.1, 1, size=(40, 3))
    first, _ = sign_flip_p_values(noisy, permutations=999, seed=7)
    again, _ = sign_flip_p_values(noisy, permutations=999, seed=7)
    other, _ = sign_flip_p_values(noisy, permutations=999, seed=8)
    assert list(first) == list(again)
    assert list(first) != list(other)
    # close to the t-test's answer for near-normal differences (Monte Carlo error ~0.016)
    t_p = stats.ttest_1samp(noisy, 0).pvalue
    assert np.all(np.abs(first - t_p) < 0.08)


def test_curves_that_differ_less_than_their_noise_are_not_significant(cache):
    rng = np.random.default_rng(7)
    a = rng.normal(100, 20, size=(25, LAYERS))
    b = rng.normal(101, 20, size=(25, LAYERS))  # 1 apart, noise 20: the curves cross
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "a", a, questions="first")
    run_b = store(cache, "b", b, questions="second")
    row = significance_of(cache, run_a, run_b)
    assert row.differing == []
    assert row.verdict == "no layer differs (Welch t, BH q < 0.05)"


def test_curves_that_differ_clearly_are_significant(cache):
    rng = np.random.default_rng(8)
    a = rng.normal(100, 5, size=(25, LAYERS))
    b = rng.normal([100, 130, 140, 150], 5, size=(25, LAYERS))  # layer 0 the same
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "a", a, questions="first")
    run_b = store(cache, "b", b, questions="second")
    row = significance_of(cache, run_a, run_b)
    assert row.differing == [1, 2, 3]
    assert row.verdict == "different at 3 of 4 layers (Welch t, BH q < 0.05)"


def test_paired_design_finds_a_small_shift_that_welch_cannot(cache):
    """Sample-to-sample spread is large, the per-question shift small and consistent: only the
    paired test (chosen because the questions are the same) sees it."""
    rng = np.random.default_rng(9)
    a = rng.normal(100, 30, size=(20, LAYERS))
    b = a + rng.normal(2, 0.5, size=(20, LAYERS))
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "correct", a)
    run_b = store(cache, "irrelevant", b)
    paired = significance_of(cache, run_a, run_b)
    assert paired.test == PAIRED
    assert paired.verdict == "different at all 4 layers (paired t, BH q < 0.05)"
    curves = compare_runs(cache, [run_a, run_b], "nuclear_norm", significance=False).curves
    assert welch_tests(*curves).differing == []


def test_identical_runs_do_not_differ_anywhere(cache):
    values = np.random.default_rng(1).normal(10, 2, size=(6, LAYERS))
    values = as_stored(values)
    run_a = store(cache, "a", values)
    run_b = store(cache, "b", values)
    row = significance_of(cache, run_a, run_b)
    assert row.test == PAIRED
    assert [t.p_value for t in row.layers] == [1.0] * LAYERS
    assert row.verdict == "no layer differs (paired t, BH q < 0.05)"


def test_paired_tests_use_only_the_samples_both_runs_stored(cache):
    rng = np.random.default_rng(4)
    a = rng.normal(10, 1, size=(10, LAYERS))
    b = rng.normal(11, 1, size=(6, LAYERS))
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "a", a, data="same")
    run_b = store(cache, "b", b, data="same", indices=[1, 3, 4, 6, 8, 9])
    row = significance_of(cache, run_a, run_b)
    assert row.pairing == "paired: same data file, 6 shared samples"
    reference = stats.ttest_rel(b, a[[1, 3, 4, 6, 8, 9]], axis=0)
    assert [t.p_value for t in row.layers] == pytest.approx(list(reference.pvalue))


def test_pairing_needs_the_same_prompt_at_every_shared_index():
    assert decide_pairing("x", "x", 16, 16).paired
    assert decide_pairing("x", "y", 16, 16).reason == "paired: same questions, 16 shared samples"
    other = decide_pairing("x", "y", 16, 15)
    assert not other.paired
    assert other.reason == "independent: 1 of 16 shared indices have other prompts"
    assert decide_pairing("x", "y", 0, 0).reason == "independent: no shared samples"
    assert not decide_pairing("x", "x", 1, 1).paired


def test_benjamini_hochberg_matches_scipy_and_keeps_nan():
    rng = np.random.default_rng(0)
    p = [*rng.uniform(0, 0.2, size=30), 1.0, 0.0]
    assert benjamini_hochberg(p) == pytest.approx(list(stats.false_discovery_control(p)))
    with_nan = [0.01, math.nan, 0.04, 0.03]
    q = benjamini_hochberg(with_nan)
    assert math.isnan(q[1])
    assert [q[0], q[2], q[3]] == pytest.approx(
        list(stats.false_discovery_control([0.01, 0.04, 0.03]))
    )


def test_layers_without_spread_or_samples_are_untested_not_different():
    def curve(run_id, mean, std, count):
        return LayerCurve(run_id, "q", [0, 1], mean, std, count)

    row = welch_tests(
        curve("a", [1.0, 2.0], [0.5, 0.5], [10, 1]), curve("b", [9.0, 2.0], [0.5, 0.5], [10, 1])
    )
    assert row.differing == [0]
    assert row.verdict == "different at 1 of 1 layer (1 layer untested) (Welch t, BH q < 0.05)"


def test_length_control_restricts_the_pairs_to_samples_in_the_range(cache):
    """Sample i has 20 + i response tokens (cache_helpers): 20-25 keeps samples 0-5."""
    rng = np.random.default_rng(6)
    a = rng.normal(10, 1, size=(12, LAYERS))
    b = a + rng.normal(0.5, 1, size=(12, LAYERS))
    a, b = as_stored(a), as_stored(b)
    run_a = store(cache, "a", a)
    run_b = store(cache, "b", b)
    comparison = compare_runs(cache, [run_a, run_b], "nuclear_norm", response_tokens=(20, 25))
    [row] = comparison.significance
    assert [t.n_a for t in row.layers] == [6] * LAYERS
    reference = stats.ttest_rel(b[:6], a[:6], axis=0)
    assert [t.p_value for t in row.layers] == pytest.approx(list(reference.pvalue))
    assert row.permutation == "exact, all 2^6 sign patterns"


def test_projections_tested_together_give_each_projection_its_own_numbers():
    """A pair's projections share their pass over the sign patterns: every number is the one
    the projection gets tested alone, with as many pairs (Monte Carlo and exact), with fewer
    pairs (a sample not finite in one projection) and with too few."""
    rng = np.random.default_rng(7)

    def values(n: int, shift: float) -> dict[int, list[float]]:
        return {i: list(rng.normal(10 + shift, 1, size=6)) for i in range(n)}

    a = {p: values(40, 0) for p in "qkvo"}
    b = {p: values(40, 0.4) for p in "qkvo"}
    b["k"][3][2] = math.nan  # k has 39 pairs, the others 40
    small_a, small_b = values(12, 0), values(12, 0.5)  # exact: all 2^12 patterns
    together = [PairedValues(p, a[p], b[p], [0, 2, 4]) for p in "qkvo"]
    together += [
        PairedValues("loss", small_a, small_b),
        PairedValues("x", {0: [1.0] * 6}, {0: [2.0] * 6}),  # one pair: too few
        PairedValues("y", {**small_a}, {**small_b}, [1, 5]),
    ]
    rows = paired_tests_of_projections("a", "b", together, "paired")
    alone = [
        paired_tests("a", "b", p.projection, p.values_a, p.values_b, "paired", p.layers)
        for p in together
    ]
    assert repr(rows) == repr(alone)
    assert rows[1].layers[0].n_a == 39 and rows[0].layers[0].n_a == 40
    assert rows[5].permutation == "too few pairs"
    assert rows[4].permutation.startswith("exact")
    assert rows[0].permutation.startswith("Monte Carlo")
