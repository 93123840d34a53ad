"""The tests of significance of compared runs: each pair's tests computed once, then reused.

Why a module of its own: the tests themselves are :mod:`layerscope.analysis.curves.significance`
(arithmetic on curves and per-sample values); deciding what to test and when a pair's answer is
already known is cache work that every view shares: the CLI's ``show``, the explorer's chart
(which asks at every key and every stored batch) and the paper's table (which never shows tests
and never asks). :func:`memoised_significance_rows` answers without testing, so a view can draw
its curves first and have the tests computed in the background.

* **Which pairs and which test**: per layer and projection (Welch's t from the sums,
  or paired t and sign-flip permutation tests when the runs measured the same questions;
  Benjamini-Hochberg across layers): :mod:`layerscope.analysis.curves.significance`. This module
  decides the pairing from what the runs stored and reads the per-sample values it needs.
* **Reuse of the tests**: a pair's tests are computed once and kept in a small in-process
  memo, because the explorer redraws a comparison at every key and
  every stored batch, and the paired tests read every shared sample's values and draw 9999
  sign patterns per projection (0.71 CPU-s of ``show`` on 150,000 samples, against 0.13
  without). The key is the cache file, both run ids, what each run has stored (its count of
  stored samples and when it was begun), the metric, the response-token range, the number
  of permutations and the seed, and the compared curves themselves (projection, layers, count,
  mean and standard deviation at each layer). Why that is enough: the tests are a pure
  function of the stored samples of the two runs (their prompts decide the pairing, their
  values the paired tests, the curves the Welch tests) and of those settings, and the cache
  only ever adds samples to a run: a stored sample is never rewritten (``write_batch`` skips
  an index already stored) and runs are never deleted, so the same count of stored samples
  under the same begun run is the same set of samples. A batch that lands changes the count
  (and a run begun again, its start time), so the tests are computed anew; ``doctor
  --repair`` removes only rows the tests never read (orphans) or identical second copies
  (of a sample: the count changes). The memo is bounded (the least
  recently used pairs are dropped) and guarded by a lock: the explorer reads from worker
  threads. Across processes the cache file keeps them
  (:mod:`layerscope.analysis.cache.kept_tests`: a ``show`` is a fresh process), under the same key less the file; a hit, in memory or in the file,
  returns the very numbers a fresh computation would.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import LayerCurve, RunInfo
from layerscope.analysis.curves.significance import (
    PERMUTATIONS,
    SEED,
    PairedValues,
    ProjectionSignificance,
    decide_pairing,
    paired_tests_of_projections,
    welch_tests,
)

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache

__all__ = [
    "SIGNIFICANCE_MEMO",
    "TESTS_FORMAT",
    "RunsChanged",
    "SignificanceMemo",
    "StoredState",
    "memoised_significance_rows",
    "pair_tests",
    "significance_rows",
    "stored_state",
]


# What a run has stored, as far as its tests are concerned (see :func:`stored_state`).
StoredState = tuple[int, str | None]


class RunsChanged(LayerscopeError):
    """A run stored more samples after its curves were read: tests of those curves would mix
    two states of the run (the curves of one, the per-sample values of the next)."""


def stored_state(info: RunInfo) -> StoredState:
    """What a run has stored, cheaply: its count of stored samples and when it was begun (the
    cache only adds samples to a run; see the module docstring)."""
    started = info.started_at.isoformat() if info.started_at is not None else None
    return info.samples_done, started


def significance_rows(
    cache: ResultsCache,
    curves: Sequence[LayerCurve],
    pairs: Sequence[tuple[str, str]],
    metric: str,
    response_tokens: tuple[int, int] | None = None,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
    stored: Mapping[str, StoredState] | None = None,
) -> list[ProjectionSignificance]:
    """The layer-wise tests of b against a for each (a, b) pair of full run ids, projection by
    projection (in a's order) where both have the curve over the same layers: paired tests
    when the two runs stored the same questions, else Welch's t from the curves' sums.

    Each pair's tests are computed once for what the runs have stored and then reused (see
    the module docstring, "Reuse of the tests"). `stored`: each run's :func:`stored_state`
    when `curves` were read, for curves read earlier than now (the explorer's, read by another
    connection): raises :class:`RunsChanged` when a run has stored more since, instead of
    testing a mix of the two states."""
    rows = _significance(
        cache,
        curves,
        pairs,
        metric,
        response_tokens,
        permutations,
        seed,
        compute=True,
        stored=stored,
    )
    assert rows is not None
    return rows


def memoised_significance_rows(
    cache: ResultsCache,
    curves: Sequence[LayerCurve],
    pairs: Sequence[tuple[str, str]],
    metric: str,
    response_tokens: tuple[int, int] | None = None,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
) -> list[ProjectionSignificance] | None:
    """What :func:`significance_rows` returns when every pair's tests are already known for
    what the runs have stored, else None; never runs a test (a view can show its curves at
    once and have the tests computed in the background)."""
    return _significance(
        cache, curves, pairs, metric, response_tokens, permutations, seed, compute=False
    )


class SignificanceMemo:
    """The tests of recently compared pairs, by key (module docstring): bounded, least
    recently used dropped first, safe to share between threads. Two threads that miss the
    same key both compute it (the same numbers); the lock guards only the dictionary."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, list[ProjectionSignificance]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> list[ProjectionSignificance] | None:
        with self._lock:
            rows = self._entries.get(key)
            if rows is None:
                return None
            self._entries.move_to_end(key)
            return list(rows)

    def put(self, key: Hashable, rows: Sequence[ProjectionSignificance]) -> None:
        with self._lock:
            self._entries[key] = list(rows)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# The format of the tests and their records: kept tests of another format are computed anew
# (raise it when a test, its inputs or LayerTest / ProjectionSignificance change).
TESTS_FORMAT = 2

# The process's memo of tests (the explorer's chart reads and a CLI command share it).
SIGNIFICANCE_MEMO = SignificanceMemo()


def _curve_digest(curves: Sequence[LayerCurve]) -> str:
    """A digest of the curves' projections, layers, counts, means and standard deviations
    (by their bytes: NaN equals NaN here, as it must for a key)."""
    digest = hashlib.blake2b(digest_size=16)
    for curve in curves:
        digest.update(f"{curve.run_id}|{curve.projection}|".encode())
        for values, kind in (
            (curve.layers, "q"),
            (curve.count, "q"),
            (curve.mean, "d"),
            (curve.std, "d"),
        ):
            digest.update(array(kind, values).tobytes())
            digest.update(b"|")
    return digest.hexdigest()


def _digest(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _significance(
    cache: ResultsCache,
    curves: Sequence[LayerCurve],
    pairs: Sequence[tuple[str, str]],
    metric: str,
    response_tokens: tuple[int, int] | None,
    permutations: int,
    seed: int,
    *,
    compute: bool,
    stored: Mapping[str, StoredState] | None = None,
) -> list[ProjectionSignificance] | None:
    """Each pair's tests from the memo, or (``compute``) computed and kept; None when a pair's
    are not known and ``compute`` is False."""
    by_key = {(c.run_id, c.projection): c for c in curves}
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    infos: dict[str, RunInfo] = {}

    def info(run_id: str) -> RunInfo:
        if run_id not in infos:
            infos[run_id] = cache.run(run_id)
        return infos[run_id]

    def sample_values(run_id: str) -> dict[str, dict[int, list[float]]]:
        if run_id not in values:
            wanted = [c.projection for c in curves if c.run_id == run_id]
            chosen = None if metric == "loss" else wanted
            values[run_id] = cache.sample_values(run_id, metric, chosen, response_tokens)
        return values[run_id]

    rows: list[ProjectionSignificance] = []
    for a, b in pairs:
        compared = [
            (curve_a, by_key[(b, curve_a.projection)])
            for curve_a in curves
            if curve_a.run_id == a
            and (b, curve_a.projection) in by_key
            and by_key[(b, curve_a.projection)].layers == curve_a.layers
        ]
        if not compared:
            continue
        info_a, info_b = info(a), info(b)
        if stored is not None:
            for run_id, run in ((a, info_a), (b, info_b)):
                if stored.get(run_id) != stored_state(run):
                    raise RunsChanged(
                        f"run {run_id} stored more samples since its curves were read"
                    )
        settings = _digest(TESTS_FORMAT, metric, response_tokens, permutations, seed)
        state = _digest(
            stored_state(info_a),
            stored_state(info_b),
            _curve_digest([curve for both in compared for curve in both]),
        )
        key = (str(cache.path), a, b, settings, state)
        known = SIGNIFICANCE_MEMO.get(key)
        if known is None:
            known = cache.kept_tests(a, b, settings, state)
            if known is not None:
                SIGNIFICANCE_MEMO.put(key, known)
        if known is None and not compute:
            return None
        if known is None:
            known = pair_tests(cache, info_a, info_b, compared, sample_values, permutations, seed)
            SIGNIFICANCE_MEMO.put(key, known)
            cache.keep_tests(a, b, settings, state, known)
        rows.extend(known)
    return rows


def pair_tests(
    cache: ResultsCache,
    info_a: RunInfo,
    info_b: RunInfo,
    compared: Sequence[tuple[LayerCurve, LayerCurve]],
    sample_values: Callable[[str], dict[str, dict[int, list[float]]]],
    permutations: int,
    seed: int,
) -> list[ProjectionSignificance]:
    """One pair's tests, projection by projection: paired when the runs stored the same
    questions, else Welch's t from the curves."""
    a, b = info_a.id, info_b.id
    pairing = decide_pairing(
        _data_digest(info_a.settings),
        _data_digest(info_b.settings),
        *cache.shared_samples(a, b),
    )
    if not pairing.paired:
        return [welch_tests(curve_a, curve_b, pairing.reason) for curve_a, curve_b in compared]
    projections = [
        PairedValues(
            curve_a.projection,
            sample_values(a).get(curve_a.projection, {}),
            sample_values(b).get(curve_a.projection, {}),
            curve_a.layers,
        )
        for curve_a, _curve_b in compared
    ]
    return paired_tests_of_projections(
        a, b, projections, pairing.reason, permutations=permutations, seed=seed
    )


def _data_digest(settings: dict) -> str | None:
    """The digest of the file a run's samples came from (computed or imported)."""
    digest = settings.get("data_sha256") or settings.get("file_sha256")
    return str(digest) if digest else None
