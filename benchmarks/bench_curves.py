"""How fast `layerscope show` aggregates a large cache.

Fills a cache file with synthetic statistics for 100,000 samples of an 80-layer model with 4
attention projections: 32 million statistic rows (one row per sample and matrix, one REAL column
for each of the 11 statistics, so 352 million values), then times what ``show`` and the TUI do:
``ResultsCache.curves`` (mean, std, 95% CI and count by layer and projection, non-finite samples
excluded), the same with length control (response-token range), ``runs()``, and opening a
read-only connection. The SQL aggregation is printed side by side with the obvious alternative,
fetching the values and averaging them in numpy, as a ratio.

    python benchmarks/bench_curves.py                     # the full 32M rows (~1.5 GB file)
    python benchmarks/bench_curves.py --samples 10000     # quicker
    python benchmarks/bench_curves.py --db /tmp/big.duckdb --keep   # reuse the file next time

Values are uniform random numbers (as incompressible as real statistics); 0.1% of the samples
get a NaN nuclear norm at one layer so that the non-finite exclusion does real work.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from layerscope.analysis.base.records import (
    MATRIX_STATISTICS,
    BatchResult,
    MatrixStatistics,
    RunHeader,
    Sample,
    SampleResult,
    TargetInfo,
)
from layerscope.analysis.cache import ResultsCache

GOAL_SECONDS = 1.0
PROJECTIONS = ("q", "k", "v", "o")


def fill(path: Path, samples: int, layers: int) -> str:
    """Create the run with ``samples`` x ``layers`` x 4 statistic rows; returns its id."""
    cache = ResultsCache(path)
    cache.upgrade()
    run_id = hashlib.sha256(f"bench-{samples}-{layers}".encode()).hexdigest()
    if any(run.id == run_id for run in cache.runs()):
        return run_id
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO runs VALUES (1, ?, 'bench-80-layer', 'synthetic', 'detailed_cot', "
            "'base', 'complete', ?, ?, ['q','k','v','o'], '{}', '{}', "
            "now()::TIMESTAMP, now()::TIMESTAMP, NULL, NULL)",
            [run_id, samples, layers],
        )
        con.execute(
            "INSERT INTO samples SELECT 1, i, 1 + random(), 50 + (i % 200), "
            "20 + (i * 7919) % 1000, 'instruction ' || i, '', 'output ' || i FROM range(?) t(i)",
            [samples],
        )
        con.execute(
            "INSERT INTO targets SELECT 1, l, p, 'model.layers.' || l || '.self_attn.' || p "
            "|| '_proj.weight', 4096, 4096 FROM range(?) a(l), "
            "(SELECT unnest(['q','k','v','o'])) b(p)",
            [layers],
        )
        values = ", ".join(
            "CASE WHEN i % 1000 = 7 AND l = 3 THEN 'nan'::REAL ELSE (random() * 100)::REAL END"
            if name == "nuclear_norm"
            else "random()::REAL"
            for name in MATRIX_STATISTICS
        )
        chunk = 10_000
        started = time.perf_counter()
        for first in range(0, samples, chunk):
            last = min(samples, first + chunk)
            # sample-major order, as the runner writes: every batch appends its samples' rows
            con.execute(
                f"INSERT INTO statistics SELECT 1, i, l, p::projection_name, {values} "  # noqa: S608 (constant expressions)
                "FROM range(?, ?) a(i), range(?) b(l), (SELECT unnest(['q','k','v','o'])) c(p) "
                "ORDER BY i, l, p",
                [first, last, layers],
            )
            done = last * layers * len(PROJECTIONS)
            print(
                f"\r  filled {done:,} rows ({time.perf_counter() - started:.0f} s)",
                end="",
                flush=True,
            )
        print()
        con.execute("CHECKPOINT")
    started = time.perf_counter()
    cache.rebuild_summaries()  # what write_batch keeps up to date batch by batch
    print(f"  per-layer sums rebuilt from the rows in {time.perf_counter() - started:.1f} s")
    return run_id


def cosine_matrix(layers: int, rng: random.Random) -> list[list[float]]:
    """A layer-by-layer cosine matrix as the engine's: symmetric, 1.0 on the diagonal, random
    cells (as incompressible as real ones)."""
    matrix = [[1.0] * layers for _ in range(layers)]
    for i in range(layers):
        for j in range(i + 1, layers):
            matrix[i][j] = matrix[j][i] = rng.uniform(-1, 1)
    return matrix


def synthetic_batch(first: int, count: int, layers: int, rng: random.Random) -> BatchResult:
    """Engine-like output: random statistics, layer cosine matrices and pair cosines."""
    results = []
    for index in range(first, first + count):
        matrices = [
            MatrixStatistics(
                layer, projection, {name: rng.uniform(0.1, 10) for name in MATRIX_STATISTICS}
            )
            for layer in range(layers)
            for projection in PROJECTIONS
        ]
        cosines = {p: cosine_matrix(layers, rng) for p in PROJECTIONS}
        pairs = {pair: [rng.uniform(-1, 1) for _ in range(layers)] for pair in ("q-o", "k-v")}
        results.append(SampleResult(index, rng.uniform(1, 3), 40, 200, matrices, cosines, pairs))
    return BatchResult(results, [], count, count)


def write_benchmark(folder: Path, samples: int, layers: int, batch_size: int) -> None:
    """Per-batch cost of storing a run the way the runner does, and the file it leaves."""
    path = folder / "write.duckdb"
    cache = ResultsCache(path)
    run_id = hashlib.sha256(b"write-bench").hexdigest()
    targets = [
        TargetInfo(layer, p, f"model.layers.{layer}.self_attn.{p}_proj.weight", 4096, 4096)
        for layer in range(layers)
        for p in PROJECTIONS
    ]
    cache.begin_run(
        RunHeader(
            run_id,
            model="bench",
            dataset="synthetic",
            response_type="none_cot",
            mode="base",
            samples_total=samples,
            targets=targets,
            settings={},
            provenance={},
        )
    )
    rng = random.Random(0)
    texts = {i: Sample(i, f"question {i} " * 20, f"answer {i} " * 60) for i in range(samples)}
    batches = [
        synthetic_batch(first, min(batch_size, samples - first), layers, rng)
        for first in range(0, samples, batch_size)
    ]
    times = []
    for batch in batches:
        started = time.perf_counter()
        cache.write_batch(run_id, batch, texts)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    cache.finish_run(run_id, "complete")
    finish = time.perf_counter() - started
    print(
        f"write: {samples} samples of a {layers}-layer model in batches of {batch_size}: "
        f"median {statistics.median(times) * 1000:.0f} ms per batch transaction "
        f"(max {max(times) * 1000:.0f} ms), finish + checkpoint {finish * 1000:.0f} ms, "
        f"file {path.stat().st_size / 1e6:.1f} MB, {path.stat().st_size / samples / 1e3:.1f} KB "
        "per sample (no spectra)"
    )


def timed(function, repeats: int) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def numpy_baseline(path: Path, metric: str) -> object:
    """The obvious alternative: fetch the values and aggregate them in numpy."""
    import numpy as np

    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            f'SELECT sample_index, layer, enum_code(projection) AS projection, "{metric}" '  # noqa: S608 (constant)
            "FROM statistics WHERE run_no = 1"
        ).fetchnumpy()
    values = columns[metric].astype(np.float64)
    layers = columns["layer"].astype(np.int64)
    projections = columns["projection"].astype(np.int64)  # enum codes: q, k, v, o = 0..3
    bad = ~np.isfinite(values)
    bad_keys = set(
        zip(projections[bad].tolist(), columns["sample_index"][bad].tolist(), strict=True)
    )
    keep = np.ones(len(values), dtype=bool)
    if bad_keys:
        sample_index = columns["sample_index"]
        for projection, index in bad_keys:
            keep &= ~((projections == projection) & (sample_index == index))
    group = projections[keep] * (layers.max() + 1) + layers[keep]
    counts = np.bincount(group)
    sums = np.bincount(group, weights=values[keep])
    squares = np.bincount(group, weights=values[keep] ** 2)
    means = sums / counts
    return means, np.sqrt((squares - counts * means**2) / (counts - 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument(
        "--db", type=Path, help="cache file to fill or reuse (default: a temp file)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cache file afterwards")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true", help="skip the numpy comparison")
    parser.add_argument("--no-write", action="store_true", help="skip the write benchmark")
    args = parser.parse_args(argv)

    folder = None
    if args.db is None:
        folder = tempfile.mkdtemp(prefix="layerscope-bench-")
        path = Path(folder) / "bench.duckdb"
    else:
        path = args.db
    rows = args.samples * args.layers * len(PROJECTIONS)
    print(
        f"layerscope cache benchmark: {args.samples:,} samples x {args.layers} layers x "
        f"{len(PROJECTIONS)} projections = {rows:,} statistic rows "
        f"({len(MATRIX_STATISTICS)} statistics each)"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"DuckDB {duckdb.__version__}"
    )
    started = time.perf_counter()
    run_id = fill(path, args.samples, args.layers)
    print(f"fill: {time.perf_counter() - started:.1f} s, file {path.stat().st_size / 1e9:.2f} GB")

    cache = ResultsCache(path)
    results = []
    seconds, curves = timed(lambda: cache.curves([run_id], "nuclear_norm"), args.repeats)
    results.append(("show: curves(nuclear_norm) from per-run sums", seconds))
    excluded = curves[0].excluded_nonfinite
    everything = (0, 10**9)  # a token range holding every sample forces the scan of all rows
    seconds, scanned = timed(
        lambda: cache.curves([run_id], "nuclear_norm", response_tokens=everything), args.repeats
    )
    results.append(("same, GROUP BY scan of all rows", seconds))
    scan_seconds = seconds
    seconds, _ = timed(
        lambda: cache.curves([run_id], "nuclear_norm", response_tokens=(100, 400)), args.repeats
    )
    results.append(("length control (100-400 tokens), scan", seconds))
    seconds, _ = timed(
        lambda: cache.curves([run_id], "sigma1_ratio", ["q"], response_tokens=everything),
        args.repeats,
    )
    results.append(("curves(sigma1_ratio, q), scan", seconds))
    seconds, _ = timed(cache.runs, args.repeats)
    results.append(("runs()", seconds))

    def open_close() -> None:
        duckdb.connect(str(path), read_only=True).close()

    seconds, _ = timed(open_close, args.repeats)
    results.append(("open + close a read-only connection", seconds))
    print(f"\n{'operation':<48}{'median s':>10}")
    for name, value in results:
        print(f"{name:<48}{value:>10.3f}")
    show_seconds = results[0][1]
    agree = max(
        abs(a - b) / abs(b)
        for c, d in zip(curves, scanned, strict=True)
        for a, b in zip(c.mean, d.mean, strict=True)
    )
    print(
        f"\ngoal: show's aggregation under {GOAL_SECONDS:.0f} s -> "
        f"{'met' if show_seconds < GOAL_SECONDS else 'MISSED'} ({show_seconds:.3f} s; "
        f"the full scan {'also meets it' if scan_seconds < GOAL_SECONDS else 'does not'}: "
        f"{scan_seconds:.3f} s); {excluded} samples with a non-finite nuclear norm excluded "
        f"from q; sums and scan agree to {agree:.1e} (relative)"
    )
    print(
        f"side by side: per-run sums {show_seconds:.3f} s vs scan {scan_seconds:.3f} s "
        f"= {scan_seconds / show_seconds:.0f}x"
    )
    if not args.no_baseline:
        baseline, (means, _stds) = timed(lambda: numpy_baseline(path, "nuclear_norm"), 1)
        q_means = scanned[0].mean
        agree = max(abs(a - b) for a, b in zip(q_means, means[: len(q_means)], strict=False))
        print(
            f"side by side: SQL scan {scan_seconds:.3f} s vs fetch + numpy {baseline:.3f} s "
            f"= {baseline / scan_seconds:.1f}x (max |difference| of q means {agree:.2e})"
        )
    if not args.no_write:
        with tempfile.TemporaryDirectory(prefix="layerscope-bench-write-") as scratch:
            write_benchmark(Path(scratch), 500, 32, 4)
    if folder is not None and not args.keep:
        for leftover in Path(folder).iterdir():
            leftover.unlink()
        os.rmdir(folder)
    elif args.keep or args.db is not None:
        print(f"cache kept at {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
