"""The tests of significance are computed once per pair of runs and what they stored, then reused.

The explorer redraws a comparison at every key and every stored batch; on a big cache the paired
tests (every shared sample's values, 9999 sign patterns per projection) were most of the time a
chart took. Here a cache of a few thousand paired samples (four runs of 500 samples asking the
same questions) is compared again and again while the calls that read per-sample values and run
the paired tests are counted: each pair is tested once, a new batch in one run tests again only
the pairs with that run, and a reused answer is the very answer a fresh computation gives.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from cache_helpers import PROJECTIONS, batch, forget_kept_tests, make_result, run_id_for, targets

from layerscope.analysis.base.records import RunHeader, Sample
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.results import pair_significance
from layerscope.analysis.results.compare import compare_runs
from layerscope.analysis.results.pair_significance import (
    SIGNIFICANCE_MEMO,
    RunsChanged,
    SignificanceMemo,
    memoised_significance_rows,
    significance_rows,
    stored_state,
)

LAYERS = 4
SAMPLES = 500
NAMES = ("none_cot", "simplified_cot", "detailed_cot", "none_cot_irrelevant")
SHIFT = {"none_cot": 0.0, "simplified_cot": 0.3, "detailed_cot": -0.2, "none_cot_irrelevant": 0.02}


def questions(indices: range) -> dict[int, Sample]:
    return {i: Sample(i, f"Question {i}: what is {i} + {i}?", f"answer {i}") for i in indices}


def results(name: str, indices: range) -> list:
    """Per-sample nuclear norms: one question effect shared by every run, a run's shift and
    noise of its own (seeded), so that the paired tests have something to find."""
    shared = np.random.default_rng(0).normal(10, 2, size=(SAMPLES + 100, LAYERS))
    own = np.random.default_rng(NAMES.index(name) + 1).normal(0, 1, size=shared.shape)
    values = shared + SHIFT[name] * np.arange(LAYERS) + own
    return [
        make_result(
            i,
            LAYERS,
            cosines=False,
            overrides={
                (layer, p): {"nuclear_norm": float(values[i, layer]) + PROJECTIONS.index(p)}
                for layer in range(LAYERS)
                for p in PROJECTIONS
            },
        )
        for i in indices
    ]


def add_samples(cache: ResultsCache, name: str, indices: range) -> None:
    cache.write_batch(run_id_for(name), batch(results(name, indices)), questions(indices))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reuse") / "template.duckdb"
    cache = ResultsCache(path)
    for name in NAMES:
        cache.begin_run(
            RunHeader(
                run_id_for(name),
                model="synthetic",
                dataset="math",
                response_type=name,
                mode="base",
                samples_total=SAMPLES + 100,
                targets=targets(LAYERS),
                settings={"data_sha256": "one file"},
                provenance={},
            )
        )
        for start in range(0, SAMPLES, 250):
            add_samples(cache, name, range(start, start + 250))
    cache.checkpoint()  # one file to copy (no write-ahead log beside it)
    return path


@pytest.fixture
def cache(template: Path, tmp_path: Path) -> ResultsCache:
    path = tmp_path / "cache.duckdb"
    shutil.copyfile(template, path)
    return ResultsCache(path)


@pytest.fixture(autouse=True)
def empty_memo():
    SIGNIFICANCE_MEMO.clear()
    yield
    SIGNIFICANCE_MEMO.clear()


class Counts:
    """How often the paired tests ran, for which pairs, and how many runs' values were read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tests: list[tuple[str, str, str]] = []
        self.reads: list[str] = []
        paired_tests = pair_significance.paired_tests_of_projections
        sample_values = ResultsCache.sample_values

        def counted_tests(run_a, run_b, projections, *args, **kwargs):
            self.tests.extend((run_a, run_b, p.projection) for p in projections)
            return paired_tests(run_a, run_b, projections, *args, **kwargs)

        def counted_reads(cache_self, run_id, *args, **kwargs):
            self.reads.append(run_id)
            return sample_values(cache_self, run_id, *args, **kwargs)

        monkeypatch.setattr(pair_significance, "paired_tests_of_projections", counted_tests)
        monkeypatch.setattr(ResultsCache, "sample_values", counted_reads)

    def take(self) -> tuple[int, int]:
        """(tests run, runs read) since the last call."""
        counts = (len(self.tests), len(self.reads))
        self.tests.clear()
        self.reads.clear()
        return counts


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    return Counts(monkeypatch)


def ids(*names: str) -> list[str]:
    return [run_id_for(name) for name in names]


def numbers(comparison) -> str:
    """Every number and word of the tests (repr: NaN is written, not compared)."""
    return repr(comparison.significance)


def test_each_pair_is_tested_once_and_reused(cache: ResultsCache, counts: Counts):
    runs = ids(*NAMES)
    first = compare_runs(cache, runs, "nuclear_norm")
    assert {row.test for row in first.significance} == {"paired t"}
    assert len(first.significance) == 3 * len(PROJECTIONS)
    assert any(row.differing for row in first.significance)
    assert counts.take() == (3 * len(PROJECTIONS), 4)  # three pairs, four runs read once each
    again = compare_runs(cache, runs, "nuclear_norm")
    assert counts.take() == (0, 0)
    assert numbers(again) == numbers(first)
    # the same pair inside another comparison: reused as well
    pair = compare_runs(cache, runs[:2], "nuclear_norm")
    assert counts.take() == (0, 0)
    assert numbers(pair) == repr(first.significance[: len(PROJECTIONS)])
    # another statistic, length range, projection set or seed is another question
    compare_runs(cache, runs[:2], "frobenius_norm")
    assert counts.take() == (len(PROJECTIONS), 2)
    compare_runs(cache, runs[:2], "nuclear_norm", response_tokens=(20, 400))
    assert counts.take() == (len(PROJECTIONS), 2)
    compare_runs(cache, runs[:2], "nuclear_norm", ["q", "k"])
    assert counts.take() == (2, 2)
    curves = cache.curves(runs[:2], "nuclear_norm")
    significance_rows(cache, curves, [tuple(runs[:2])], "nuclear_norm", seed=1)
    assert counts.take() == (len(PROJECTIONS), 2)


def test_a_new_batch_tests_again_the_pairs_with_that_run(cache: ResultsCache, counts: Counts):
    runs = ids(*NAMES[:3])
    compare_runs(cache, runs, "nuclear_norm")
    counts.take()
    add_samples(cache, "simplified_cot", range(SAMPLES, SAMPLES + 50))
    grown = compare_runs(cache, runs, "nuclear_norm")
    tested = {(a, b) for a, b, _p in counts.tests}
    assert counts.take() == (len(PROJECTIONS), 2)
    assert tested == {(runs[0], runs[1])}
    assert f"{SAMPLES} shared samples" in grown.significance[0].pairing  # a has 500 only
    # the baseline catches up: the shared samples change, both pairs are tested again
    add_samples(cache, "none_cot", range(SAMPLES, SAMPLES + 50))
    caught_up = compare_runs(cache, runs, "nuclear_norm")
    assert counts.take()[0] == 2 * len(PROJECTIONS)
    assert f"{SAMPLES + 50} shared samples" in caught_up.significance[0].pairing
    # and reused answers are what a fresh computation gives
    SIGNIFICANCE_MEMO.clear()
    forget_kept_tests(cache.path)
    assert numbers(compare_runs(cache, runs, "nuclear_norm")) == numbers(caught_up)
    assert counts.take()[0] == 2 * len(PROJECTIONS)


def test_known_tests_are_handed_out_without_computing(cache: ResultsCache, counts: Counts):
    runs = ids(*NAMES[:2])
    curves = cache.curves(runs, "nuclear_norm")
    pairs = [(runs[0], runs[1])]
    assert memoised_significance_rows(cache, curves, pairs, "nuclear_norm") is None
    assert counts.take() == (0, 0)
    computed = significance_rows(cache, curves, pairs, "nuclear_norm")
    counts.take()
    known = memoised_significance_rows(cache, curves, pairs, "nuclear_norm")
    assert counts.take() == (0, 0)
    assert repr(known) == repr(computed)
    # a single run has no pair: nothing to test, known at once
    assert memoised_significance_rows(cache, curves, [], "nuclear_norm") == []


def test_curves_read_before_a_batch_are_not_tested_against_the_samples_after_it(
    cache: ResultsCache, counts: Counts
):
    """The explorer reads its curves, then has them tested by another connection: a batch that
    lands in between would have the tests mix two states of the run (the curves of one, the
    per-sample values of the next), kept under a key no later read asks for. Such tests are
    refused, and the curves of the new state are tested."""
    runs = ids(*NAMES[:2])
    pairs = [(runs[0], runs[1])]
    curves = cache.curves(runs, "nuclear_norm")
    stored = {run_id: stored_state(cache.run(run_id)) for run_id in runs}
    add_samples(cache, "simplified_cot", range(SAMPLES, SAMPLES + 50))
    with pytest.raises(RunsChanged, match=runs[1]):
        significance_rows(cache, curves, pairs, "nuclear_norm", stored=stored)
    assert counts.take() == (0, 0)
    curves = cache.curves(runs, "nuclear_norm")
    stored = {run_id: stored_state(cache.run(run_id)) for run_id in runs}
    tested = significance_rows(cache, curves, pairs, "nuclear_norm", stored=stored)
    assert counts.take() == (len(PROJECTIONS), 2)
    assert repr(tested) == repr(significance_rows(cache, curves, pairs, "nuclear_norm"))


def test_threads_share_the_memo(cache: ResultsCache, counts: Counts):
    runs = ids(*NAMES[:2])
    compare_runs(cache, runs, "nuclear_norm")
    counts.take()
    answers: list[str] = []

    def read() -> None:
        answers.append(numbers(compare_runs(ResultsCache(cache.path), runs, "nuclear_norm")))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts.take()[0] == 0
    assert len(set(answers)) == 1


def test_the_memo_keeps_the_most_recently_used_pairs():
    memo = SignificanceMemo(size=2)
    memo.put("a", [])
    memo.put("b", [])
    assert memo.get("a") == []  # a is now the most recent
    memo.put("c", [])
    assert memo.get("b") is None
    assert memo.get("a") == [] and memo.get("c") == []
    assert len(memo) == 2
