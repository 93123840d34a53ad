"""``select`` and ``correlations``: a run's samples as data, from a shell.

Why here and not in ``show``: ``show`` is about curves over layers (one number per layer, means
over samples); these commands are about the samples themselves, the follow-up paper's use:
which samples a gradient statistic singles out (written back as a dataset to train on), and how
a sample's statistic goes with its loss, its length and its own quality scores. Numbers come
from :mod:`layerscope.analysis.results.selection`; this module parses, checks and prints. No torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Literal

from layerscope.analysis.base.outputs import OutputError, OutputExistsError
from layerscope.analysis.base.records import RunInfo
from layerscope.analysis.cache import ResultsCache
from layerscope.app.cli import output
from layerscope.app.cli.arguments import UsageError

# Below this p-value a correlation is marked (one glyph, legible without colour).
MARKED_P = 0.05


def _statistic(name: str, option: str, *, samples_too: bool = False) -> str:
    from layerscope.analysis.results.compare import resolve_metric
    from layerscope.analysis.results.selection import LENGTH, LOSS

    if samples_too and name.strip().lower() in (LOSS, LENGTH, "length"):
        return LENGTH if name.strip().lower() == "length" else name.strip().lower()
    try:
        metric = resolve_metric(name)
    except ValueError as error:
        more = ", loss, response_tokens" if samples_too else ""
        raise UsageError(f"{option}: {error}{more}") from None
    if metric == "loss":
        if samples_too:
            return LOSS
        raise UsageError(f"{option}: loss is one number per sample, not per layer; it is a column")
    return metric


def _check_run(info: RunInfo, projection: str | None, layers: tuple[int, int] | None) -> None:
    if projection is not None and projection not in info.projections:
        raise UsageError(
            f"--proj {projection}: run {info.short_id} has no {projection} matrices; "
            f"it has {','.join(info.projections)}"
        )
    if layers is not None and layers[1] >= info.layers:
        raise UsageError(
            f"--layers {layers[0]}-{layers[1]}: run {info.short_id} has layers 0-{info.layers - 1}"
        )


def cmd_select(args: argparse.Namespace) -> int:
    from layerscope.analysis.results.selection import select_samples, write_selection

    statistic = _statistic(args.by, "--by", samples_too=True)
    projection = args.proj.strip() if args.proj else None
    if projection is not None and "," in projection:
        raise UsageError(f"--proj {projection}: select ranks by one projection, or by all")
    cache = ResultsCache(args.db)
    info = cache.run(args.run)
    _check_run(info, projection, args.layers)
    end: Literal["top", "bottom"] = "top" if args.top else "bottom"
    selection = select_samples(
        cache, info, statistic, args.top or args.bottom, end, projection, args.layers
    )
    if not selection.indices:
        raise UsageError(f"--by {args.by}: run {info.short_id} has no sample with a finite value")
    destination = args.output if isinstance(args.output, str) else args.output.expanduser()
    try:
        written = write_selection(info, selection, destination, cache.files, force=args.force)
    except OutputExistsError as error:
        raise OutputError(f"--output {error}; use --force to replace it, or another name") from None
    except OutputError as error:
        raise OutputError(f"--output {error}") from None
    where = "standard output" if isinstance(destination, str) else destination
    short = "" if written == len(selection.indices) else f" ({written} found in the data file)"
    print(
        f"wrote the {selection.describe} of run {info.short_id}{short} to {where}",
        file=sys.stderr,
    )
    return 0


def _number(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def cmd_correlations(args: argparse.Namespace) -> int:
    from layerscope.analysis.results.selection import (
        correlations,
        sample_variables,
        spearman,
        statistic_variable,
    )

    chosen = [_statistic(name, "--metric") for name in args.metric.split(",") if name.strip()]
    if not chosen:
        raise UsageError("--metric: name at least one statistic")
    statistic = chosen[0]
    cache = ResultsCache(args.db)
    info = cache.run(args.run)
    _check_run(info, None, args.layers)
    variables = sample_variables(cache, info, chosen, args.layers)
    overall = statistic_variable(statistic, None)
    for name in (args.against, args.scatter):
        if name is not None and name not in variables:
            raise UsageError(
                f"{'--with' if name == args.against else '--scatter'} {name}: run "
                f"{info.short_id} has no such per-sample variable; it has {', '.join(variables)}"
            )
    pairs = [
        c
        for c in correlations(
            variables,
            [statistic_variable(s, p) for s in chosen for p in (None, *info.projections)],
        )
        if args.against is None or args.against in (c.first, c.second)
    ]
    if args.json:
        record = {
            "run": info.id,
            "statistics": chosen,
            "layers": list(args.layers) if args.layers else None,
            "variables": list(variables),
            "correlations": [
                {
                    "first": c.first,
                    "second": c.second,
                    "rho": output.finite(c.rho),
                    "p": output.finite(c.p_value),
                    "n": c.n,
                }
                for c in pairs
            ],
        }
        print(json.dumps(record, indent=2))
        return 0
    console = output.console()
    where = f", layers {args.layers[0]}-{args.layers[1]}" if args.layers else ""
    rows = [
        [
            c.first,
            c.second,
            _number(c.rho) + ("*" if c.p_value < MARKED_P else " "),
            _p(c.p_value),
            str(c.n),
        ]
        for c in pairs
    ]
    columns = (
        output.Column("statistic"),
        output.Column("with"),
        output.Column("rho", justify="right", whole=True),
        output.Column("p", justify="right", whole=True),
        output.Column("n", justify="right", whole=True),
    )
    title = f"Spearman correlations per sample, run {info.short_id} ({', '.join(chosen)}{where})"
    console.print(output.fitted_table(title, columns, rows, console.width), crop=False)
    console.print(f"* p < {MARKED_P}; the statistic is each sample's mean over layers")
    if args.scatter:
        from layerscope.app.charts import Points, render_scatter

        x = variables[args.scatter]
        y = variables[overall]
        common = sorted(i for i in y if i in x)
        found = spearman(overall, y, args.scatter, x)
        print()
        print(
            render_scatter(
                [Points(f"{len(common)} samples", [x[i] for i in common], [y[i] for i in common])],
                title=f"{overall} against {args.scatter} (rho {_number(found.rho)})",
                xlabel=args.scatter,
                ylabel=overall,
                width=output.chart_width(args.width),
                height=args.height,
                color=sys.stdout.isatty(),
            )
        )
    return 0
