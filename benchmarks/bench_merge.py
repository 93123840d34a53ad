"""How long ``layerscope merge`` takes: two half caches (an array job's shards) of one synthetic
run merged into an empty destination, then merged again (every sample present: all compared).

    python benchmarks/bench_merge.py [--samples 1000] [--layers 16]

Synthetic statistics (tests/cache_helpers.py) with spectra and cosines, 4 projections.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cache_helpers import batch, make_result, make_samples, run_id_for, targets

from layerscope.analysis.base.records import RunHeader
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.cache.merging import merge_caches


def half(path: Path, count: int, layers: int, parity: int) -> None:
    cache = ResultsCache(path)
    run_id = run_id_for("bench")
    header = RunHeader(
        run_id, "synthetic", "math", "none_cot", "base", count, targets(layers), {}, {
            "shard": f"{parity}/2", "requested": count}
    )  # fmt: skip
    cache.begin_run(header)
    samples = make_samples(count)
    indices = [i for i in range(count) if i % 2 == parity]
    for start in range(0, len(indices), 64):
        results = [make_result(i, layers, spectra=True) for i in indices[start : start + 64]]
        cache.write_batch(run_id, batch(results), samples)
    cache.finish_run(run_id, "complete")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for parity in (0, 1):
            half(root / f"s{parity}.duckdb", args.samples, args.layers, parity)
        sources = [root / "s0.duckdb", root / "s1.duckdb"]
        began = time.perf_counter()
        (first, second) = merge_caches(sources, root / "dst.duckdb")
        copied = time.perf_counter() - began
        began = time.perf_counter()
        again = merge_caches(sources, root / "dst.duckdb")
        compared = time.perf_counter() - began
        rows = args.samples * args.layers * 4
        print(f"{args.samples} samples x {args.layers} layers x 4 projections ({rows} matrices)")
        print(f"merge into empty: {copied:.2f} s ({args.samples / copied:.0f} samples/s), "
              f"status {second.status} {second.held}/{second.requested}")  # fmt: skip
        present = sum(m.present for m in again)
        print(f"merge again:      {compared:.2f} s ({present / compared:.0f} samples/s compared), "
              f"copied {sum(m.copied for m in again)}")  # fmt: skip
        assert first.copied + second.copied == args.samples


if __name__ == "__main__":
    main()
