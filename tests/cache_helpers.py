"""Synthetic engine output for the cache, comparison and CLI tests (no torch, no model).

Values are simple closed forms of (sample, layer, projection) so that tests can compute the
expected means by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb

from layerscope.analysis.base.records import (
    MATRIX_STATISTICS,
    BatchResult,
    MatrixStatistics,
    RunHeader,
    Sample,
    SampleResult,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.cache import liveness
from layerscope.analysis.cache.health.stray_rows import RUN_TABLES
from layerscope.analysis.cache.schema import table_names

PROJECTIONS = ("q", "k", "v", "o")


def run_id_for(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def small_header(name: str) -> RunHeader:
    """The header of a small synthetic run (3 samples, 2 layers) named ``name``."""
    return RunHeader(
        run_id_for(name),
        model="synthetic",
        dataset="math",
        response_type="none_cot",
        mode="base",
        samples_total=3,
        targets=targets(2),
        settings={"max_length": 1024},
        provenance={"layerscope": "test"},
    )


def targets(layers: int, projections: Sequence[str] = PROJECTIONS) -> list[TargetInfo]:
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    return [
        TargetInfo(
            layer,
            p,
            f"model.layers.{layer}.self_attn.{names.get(p, p + '_proj')}.weight",
            8,
            8,
        )
        for layer in range(layers)
        for p in projections
    ]


def nuclear(index: int, layer: int, projection: str) -> float:
    """The synthetic nuclear norm of a sample's matrix."""
    return float((index + 1) * (layer + 1) + PROJECTIONS.index(projection))


def make_result(
    index: int,
    layers: int = 4,
    projections: Sequence[str] = PROJECTIONS,
    *,
    response_tokens: int | None = None,
    spectra: bool = False,
    cosines: bool = True,
    overrides: dict[tuple[int, str], dict[str, float]] | None = None,
) -> SampleResult:
    loss = 1.0 + index / 10
    matrices = []
    for layer in range(layers):
        for projection in projections:
            n = nuclear(index, layer, projection)
            spectrum = [n * 0.5, n * 0.3, n * 0.2]
            values = {
                "mean": 0.001 * (index + 1),
                "max": 0.5 + layer,
                "min": -0.5 - layer,
                "frobenius_norm": math.sqrt(sum(s * s for s in spectrum)),
                "nuclear_norm": n,
                "sigma_max": spectrum[0],
                "sigma_min": spectrum[-1],
                "sigma1_ratio": spectrum[0] / n,
                "nuclear_per_loss": n / loss,
                "effective_rank": math.exp(-sum(s / n * math.log(s / n) for s in spectrum)),
                "stable_rank": sum(s * s for s in spectrum) / spectrum[0] ** 2,
            }
            assert set(values) == set(MATRIX_STATISTICS)
            values.update((overrides or {}).get((layer, projection), {}))
            matrices.append(
                MatrixStatistics(layer, projection, values, spectrum if spectra else None)
            )
    layer_cosines = {}
    pair_cosines = {}
    if cosines:
        for p_i, projection in enumerate(projections):
            layer_cosines[projection] = [
                [1.0 if i == j else 0.1 * (p_i + 1) + 0.01 * index for j in range(layers)]
                for i in range(layers)
            ]
        pair_cosines = {"q-o": [0.2] * layers, "k-v": [0.3 + 0.01 * index] * layers}
    return SampleResult(
        index=index,
        loss=loss,
        prompt_tokens=10 + index,
        response_tokens=response_tokens if response_tokens is not None else 20 + index,
        matrices=matrices,
        layer_cosines=layer_cosines,
        pair_cosines=pair_cosines,
    )


def make_samples(count: int) -> dict[int, Sample]:
    return {
        i: Sample(i, f"Question {i}: what is {i} + {i}?", f"The answer is {2 * i}.")
        for i in range(count)
    }


def batch(results: Sequence[SampleResult], skipped: Sequence[SkippedSample] = ()) -> BatchResult:
    return BatchResult(list(results), list(skipped), len(results) + len(skipped), 0)


def fill_run(
    cache,
    name: str,
    count: int,
    layers: int = 4,
    *,
    batch_size: int = 4,
    spectra: bool = False,
    response_tokens=None,
    model: str = "synthetic",
    dataset: str = "math",
    response_type: str = "none_cot",
    finish: str | None = "complete",
    mode: str = "base",
) -> str:
    """Create a complete synthetic run of ``count`` samples; returns its id."""
    run_id = run_id_for(name)
    cache.begin_run(
        RunHeader(
            run_id,
            model=model,
            dataset=dataset,
            response_type=response_type,
            mode=mode,
            samples_total=count,
            targets=targets(layers),
            settings={"max_length": 1024, "spectra": spectra},
            provenance={"layerscope": "test", "batch_size": batch_size},
        )
    )
    samples = make_samples(count)
    for start in range(0, count, batch_size):
        results = [
            make_result(
                i,
                layers,
                spectra=spectra,
                response_tokens=response_tokens(i) if response_tokens else None,
            )
            for i in range(start, min(count, start + batch_size))
        ]
        cache.write_batch(run_id, batch(results), samples)
    if finish:
        cache.finish_run(run_id, finish)
    return run_id


def paper_matrices(
    layers: int, smallest: float, spectrum: list[float] | None = None
) -> dict[str, dict]:
    """The per-matrix entries of one line of the paper's JSONL format: q, k, v and o of every
    layer, their nuclear norm growing with depth, their smallest singular value ``smallest``
    and, when given, the singular values ``spectrum`` (``S_list``)."""
    matrices = {}
    for layer in range(layers):
        for p in "qkvo":
            entry = {
                "M_mean": 0.01,
                "M_max": 0.5,
                "M_min": -0.5,
                "frobenius_norm": 5.0,
                "S_sum": 7.0 + layer,
                "S_max": 4.0,
                "S_min": smallest,
            }
            if spectrum is not None:
                entry["S_list"] = list(spectrum)
            matrices[f"model.layers.{layer}.self_attn.{p}_proj.weight"] = entry
    return matrices


def copy_run(path, run_id: str, copies: int) -> None:
    """Add ``copies`` copies of the stored run ``run_id`` to the cache file at ``path``, every
    row of every table copied in SQL under new run numbers and ids: a cache of many runs in a
    fraction of the time the write path takes for each."""
    with duckdb.connect(str(path)) as con:
        [(source, highest)] = con.execute(
            "SELECT (SELECT run_no FROM runs WHERE id = ?), max(run_no) FROM runs", [run_id]
        ).fetchall()
        numbers = "SELECT ? + i AS number FROM range(1, ? + 1) r(i)"
        con.execute(
            "INSERT INTO runs SELECT runs.* REPLACE (n.number AS run_no, "
            f"sha256(id || n.number) AS id) FROM runs, ({numbers}) n WHERE run_no = ?",
            [highest, copies, source],
        )
        present = table_names(con)
        for table in (t for t in RUN_TABLES if t in present):
            con.execute(
                f"INSERT INTO {table} SELECT {table}.* REPLACE (n.number AS run_no) "
                f"FROM {table}, ({numbers}) n WHERE run_no = ? ORDER BY n.number",
                [highest, copies, source],
            )
        con.execute("CHECKPOINT")


def forget_kept_tests(path: Path) -> None:
    """Drop the tests of significance the file keeps (with the in-process memo cleared, the
    next comparison computes them afresh)."""
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM kept_tests")


def ended(db: Path, run_id: str) -> None:
    """As if the process that began the run had ended: its claim on the run (the lock a live
    compute holds, cache/liveness.py) is let go of. A run begun in the test's own process is
    held by the test's process until then."""
    liveness.release_run(Path(db), run_id)


_CLAIMING = """
import sys
from pathlib import Path
from layerscope.analysis.cache import liveness
print(liveness.claim_run(Path(sys.argv[1]), sys.argv[2]), flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def computing_elsewhere(db: Path, run_id: str) -> Iterator[int]:
    """A live process that holds the run as a compute does (until the block ends, or it is
    killed): yields its PID."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CLAIMING, str(db), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        answer = child.stdout.readline().strip()
        assert answer == "True", f"the other process could not claim the run: {answer!r}"
        yield child.pid
    finally:
        child.kill()
        child.wait()
