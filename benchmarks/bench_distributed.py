"""One process versus two torchrun CPU ranks on a length-skewed dataset.

The bundled math dataset's bare answers (``none_cot``) and detailed chains of thought
(``detailed_cot``, about ten times longer) in one request: the case where a static split by
sample count leaves one rank idle while the other works through the long samples. For each
setup it times the computing phase (first batch begun to last batch stored; model loading is
not computing), the throughput in samples per second over all ranks, and, per rank, the seconds
it spent computing; the idle time of the least busy rank is the phase's length minus its busy
seconds. Setups:

  1 process      ``runner.execute`` alone (torch uses both cores)
  1 proc, 1 thr  the same with OMP_NUM_THREADS=1 (what each rank gets from torchrun)
  2 ranks        torchrun, both ranks compute (rank 0 computes in a thread beside its store)
  2 ranks, 0 idle  torchrun, rank 0 only plans, stores and hands out (rank 1 computes alone)

    python benchmarks/bench_distributed.py                 # tiny model, 20 samples per type
    python benchmarks/bench_distributed.py --limit 24 --batch-size 4

Each rank's computing is timed by wrapping ``distributed.compute_unit`` in the rank itself
(this script is torchrun's entry point for the two-rank setups).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPES = ["none_cot", "detailed_cot"]


def request(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from layerscope.analysis.runs.runner import RunRequest

    return RunRequest.from_settings(
        args.model,
        "math",
        TYPES,
        {"limit": args.limit, "batch_size": args.batch_size, "dtype": "float32", "device": "cpu"},
    )


def timed_phase(progress, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Drain rank 0's progress; write when computing began and ended and how much was done."""
    began = None
    done = 0
    for update in progress:
        if update.status == "running" and began is None:
            began = time.perf_counter()
        if update.status in ("complete", "cancelled", "failed"):
            done += update.done
    ended = time.perf_counter()
    out.write_text(json.dumps({"began": began, "ended": ended, "samples": done}))


def rank_entry(args: argparse.Namespace) -> None:
    """One rank of a two-rank setup (or the single process): compute, timing each unit."""
    from layerscope.analysis.runs import distributed

    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    busy: list[float] = []
    spans: list[float] = []  # first start, last end (CLOCK_MONOTONIC: one clock per machine)
    compute = distributed.compute_unit

    def timed(*unit_args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return compute(*unit_args, **kwargs)
        finally:
            busy.append(time.perf_counter() - start)
            spans[:] = [spans[0] if spans else start, time.perf_counter()]

    distributed.compute_unit = timed
    try:
        if rank == 0:
            if distributed.detect() is None:
                from layerscope.analysis.runs import runner

                timed_phase(runner.execute(request(args), args.db), out / "phase.json")
            else:
                timed_phase(
                    distributed.execute(
                        request(args), args.db, compute_on_coordinator=not args.rank0_idle
                    ),
                    out / "phase.json",
                )
        else:
            distributed.serve(request(args))
    finally:
        (out / f"rank{rank}.json").write_text(
            json.dumps({"busy": sum(busy), "units": len(busy), "spans": spans})
        )


def run_setup(
    name: str, ranks: int, rank0_idle: bool, threads: str | None, args: argparse.Namespace
) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        entry = [
            __file__, "--rank-entry", "--out", str(out), "--db", str(out / "r.duckdb"),
            "--model", args.model, "--limit", str(args.limit),
            "--batch-size", str(args.batch_size),
        ]  # fmt: skip
        if rank0_idle:
            entry.append("--rank0-idle")
        if ranks == 1:
            command = [sys.executable, *entry]
        else:
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={ranks}", *entry,
            ]  # fmt: skip
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads  # torchrun sets 1 per rank itself
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        phase = json.loads((out / "phase.json").read_text())
        busy = {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)}
    seconds = phase["ended"] - phase["began"]
    if ranks == 1:  # the runner computes without compute_unit: busy the whole phase
        busy = {0: {"busy": seconds, "units": "-", "spans": []}}
    computing = [b for r, b in busy.items() if not (rank0_idle and r == 0)]
    least = min(computing, key=lambda b: b["busy"])
    # the least busy rank's idle time: before its first batch (loading its replica while rank 0
    # already computed) and after its last one (waiting for the others: the balance)
    lag = least["spans"][0] - phase["began"] if ranks > 1 else 0.0
    tail = phase["ended"] - least["spans"][1] if ranks > 1 else 0.0
    return {
        "setup": name,
        "samples": phase["samples"],
        "wall": wall,
        "phase": seconds,
        "rate": phase["samples"] / seconds,
        "busy": [round(busy[r]["busy"], 2) for r in range(ranks)],
        "units": [busy[r]["units"] for r in range(ranks)],
        "idle": seconds - least["busy"] if ranks > 1 else 0.0,
        "lag": lag,
        "tail": tail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank-entry", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank0-idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--limit", type=int, default=20, help="samples per response type")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    if args.rank_entry:
        rank_entry(args)
        return
    setups = [
        ("1 process", 1, False, None),
        ("1 proc, 1 thr", 1, False, "1"),
        ("2 ranks", 2, False, None),
        ("2 ranks, 0 idle", 2, True, None),
    ]
    print(
        f"model {args.model}, math {'+'.join(TYPES)}, {args.limit} samples per type, "
        f"batch {args.batch_size}, float32, CPU ({os.cpu_count()} cores)"
    )
    print(
        f"{'setup':<16}{'samples':>8}{'wall s':>8}{'compute s':>10}{'samples/s':>10}"
        f"{'speed-up':>9}  {'busy s per rank':<18}{'units':<10}{'idle s (start lag, tail)':>26}"
    )
    base = None
    for name, ranks, idle, threads in setups:
        row = run_setup(name, ranks, idle, threads, args)
        base = base or row["rate"]
        print(
            f"{row['setup']:<16}{row['samples']:>8}{row['wall']:>8.1f}{row['phase']:>10.1f}"
            f"{row['rate']:>10.2f}{row['rate'] / base:>8.2f}x  {row['busy']!s:<18}"
            f"{row['units']!s:<10}{row['idle']:>10.2f} ({row['lag']:.2f}, {row['tail']:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
