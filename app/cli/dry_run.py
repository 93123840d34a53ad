"""``compute --dry-run``: what a computation would cost, told before anything is computed.

Why apart from :mod:`.computing`: the estimate is the analysis layer's
(:func:`layerscope.analysis.runs.estimate.estimate`, which plans, loads and calibrates as
``compute`` would and stores nothing); this module only renders it, for a person (a table of
the runs on stdout, the loading stages on stderr) or for a program (``--progress-format
jsonl``: the stages and then one ``estimate`` line, as compute's own lines are written).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from layerscope.app.cli import output
from layerscope.app.cli.tables import Column, FittedTable, fitted_table
from layerscope.app.labels import duration

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LoadStage
    from layerscope.analysis.runs.estimate import Estimate
    from layerscope.analysis.runs.runner import RunRequest

COLUMNS = (
    Column("id", whole=True),
    Column("run", whole=True),
    Column("samples", justify="right", whole=True),
    Column("cached", justify="right", drop=2),
    Column("skipped", justify="right", drop=1),
    Column("tokens", justify="right", whole=True),
    Column("est. time", justify="right", whole=True),
)


def dry_run(request: RunRequest, db: str | None, jsonl: bool, quiet: bool) -> int:
    """Estimate ``request`` and say so; exit status 0 (errors are raised as compute's)."""
    import time

    from layerscope.analysis.runs.estimate import estimate
    from layerscope.analysis.runs.progress_codec import StageEvent, encode

    began = time.perf_counter()
    steps: list[str] = []

    def staged(stage: LoadStage) -> None:
        if jsonl:
            print(encode(StageEvent(stage, time.perf_counter() - began)), flush=True)
        elif not quiet and stage.step not in steps:  # a line per step, not per tensor
            steps.append(stage.step)
            print(f"{stage.description}…", file=sys.stderr, flush=True)

    result = estimate(request, db, staged)
    if jsonl:
        print(json.dumps({"event": "estimate", **result.as_json()}), flush=True)
        return 0
    console = output.console()
    console.print(estimate_table(result, console.width), crop=False)
    for line in estimate_lines(result):
        print(line)
    return 0


def estimate_table(result: Estimate, width: int) -> FittedTable:
    """One row per run: its id, label, samples to do, tokens and estimated time."""
    rows = [
        (
            run.run_id[:12],
            run.label,
            str(run.samples),
            str(run.cached),
            str(sum(run.skipped.values())),
            f"{run.tokens:,}",
            duration(run.seconds) if run.samples else "-",
        )
        for run in result.runs
    ]
    rows.append(
        (
            "",
            "total",
            str(result.samples),
            str(sum(run.cached for run in result.runs)),
            str(sum(sum(run.skipped.values()) for run in result.runs)),
            f"{result.tokens:,}",
            duration(result.seconds) if result.samples else "-",
        )
    )
    return fitted_table("dry run: nothing computed or stored", COLUMNS, rows, width)


def estimate_lines(result: Estimate) -> list[str]:
    """What the estimate rests on, and the reasons of refused samples: a person must see that
    the time is an extrapolation, from how little it was made."""
    lines = []
    reasons: dict[str, int] = {}
    for run in result.runs:
        for reason, count in run.skipped.items():
            # One line per kind of reason: "(prompt is 54 tokens)" differs from sample to sample.
            kind = reason.split(" (")[0]
            reasons[kind] = reasons.get(kind, 0) + count
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        lines.append(f"would skip {count} sample{'s' * (count != 1)}: {reason}")
    calibration = result.calibration
    if calibration is None or not result.samples:
        runs = len(result.runs)
        cached = f": all {runs} run{'s' * (runs != 1)} are cached" if calibration is None else ""
        lines.append(f"nothing to compute{cached}")
        return lines
    memory = "peak memory not measurable on this device"
    if calibration.peak_bytes is not None:
        what = "torch's peak allocation" if calibration.memory_kind == "cuda" else "peak RSS"
        memory = f"peak memory {gib(calibration.peak_bytes)} ({what})"
    lines.append(
        f"estimate: {duration(result.seconds)} of computing, plus about "
        f"{duration(calibration.loading_seconds)} loading the model; {memory}"
    )
    lines.append(
        f"extrapolated from {calibration.samples} sample{'s' * (calibration.samples != 1)} "
        f"({calibration.tokens:,} tokens in {calibration.seconds:.2f} s) on "
        f"{calibration.device}; longer samples may take more time and memory per token"
    )
    return lines


def gib(count: int) -> str:
    """Bytes as '1.2 GiB' or '310 MiB'."""
    if count >= 1 << 30:
        return f"{count / (1 << 30):.1f} GiB"
    return f"{count / (1 << 20):.0f} MiB"
