"""``figure`` and ``table``: carrying cached results into a paper.

Why apart from :mod:`.browsing`: these commands make artefacts for a manuscript (a four-panel
figure file, a MAD table in Markdown, LaTeX or CSV) rather than a view to read in a terminal.
The numbers are ``analysis/``'s (:mod:`~layerscope.analysis.results.tables`, the curves of
:func:`~layerscope.analysis.results.compare.compare_runs`); matplotlib, an optional extra, is imported
only once ``figure`` has checked its arguments, and its absence is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerscope.analysis.base.outputs import OutputError, OutputExistsError, is_stdout
from layerscope.analysis.cache import CacheError, ResultsCache
from layerscope.app.cli.arguments import UsageError, projections
from layerscope.app.cli.browsing import check_projections, metric_name, no_samples_message
from layerscope.app.cli.charting import log_axis_problem


def _layered_metric(name: str) -> str:
    metric = metric_name(name)
    if metric == "loss":
        raise UsageError("--metric loss: loss has no layers; choose a statistic of the matrices")
    return metric


def cmd_figure(args: argparse.Namespace) -> int:
    from layerscope.app.figures import MISSING_MATPLOTLIB, figure_format, have_matplotlib

    metric = _layered_metric(args.metric)
    if is_stdout(args.output):
        raise UsageError("--output -: a figure is a file; give a name ending in .png, .svg or .pdf")
    destination = Path(args.output).expanduser()
    try:
        figure_format(destination)
    except ValueError as error:
        raise UsageError(f"--output {error}") from None
    if destination.is_dir():
        raise UsageError(f"--output {destination} is a folder; give a file name")
    if not have_matplotlib():
        raise UsageError(MISSING_MATPLOTLIB)
    from layerscope.analysis.base.outputs import check_destination
    from layerscope.analysis.results.compare import compare_runs
    from layerscope.app.figures import PANELS, paper_figure, save_figure
    from layerscope.app.labels import run_labels

    cache = ResultsCache(args.db)
    infos = [cache.run(run) for run in args.runs]
    measured = [p for p in PANELS if any(p in info.projections for info in infos)]
    if not measured:
        raise UsageError(
            f"run(s) {', '.join(i.short_id for i in infos)} have no q, k, v or o matrices "
            "(computed with --modules mlp?); the figure draws those four"
        )
    try:
        check_destination(destination, cache.files, force=args.force)  # before any drawing
    except OutputExistsError as error:
        raise OutputError(f"--output {error}; use --force to replace it, or another name") from None
    except OutputError as error:
        raise OutputError(f"--output {error}") from None
    comparison = compare_runs(
        cache, [i.id for i in infos], metric, measured, args.tokens, significance=False
    )
    if not comparison.curves:
        raise CacheError(no_samples_message(cache, infos, args.tokens))
    labels = run_labels(infos)
    problem = log_axis_problem(comparison.curves, labels, metric) if args.log_y else None
    if problem:
        raise UsageError(problem)
    figure = paper_figure(
        comparison.curves,
        labels,
        metric,
        layer_counts={info.id: info.layers for info in infos},
        depth=args.depth,
        band=args.band,
        title=args.title,
        log_y=args.log_y,
    )
    try:
        chosen = save_figure(figure, destination, cache.files, force=args.force)
    except OutputExistsError as error:
        raise OutputError(f"--output {error}; use --force to replace it, or another name") from None
    except OutputError as error:
        raise OutputError(f"--output {error}") from None
    runs = len(infos)
    print(
        f"wrote the {metric} figure of {runs} run{'s' if runs != 1 else ''} "
        f"({chosen.upper()}) to {destination}",
        file=sys.stderr,
    )
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from layerscope.analysis.results.compare import compare_runs
    from layerscope.analysis.results.tables import paper_table, render_table
    from layerscope.app.labels import short_model

    metric = _layered_metric(args.metric)
    chosen = projections(args.proj) or []
    if len(chosen) != 1:
        raise UsageError(f"--proj {args.proj}: give one projection, e.g. q")
    cache = ResultsCache(args.db)
    infos = [cache.run(run) for run in args.runs]
    check_projections(infos, chosen)
    comparison = compare_runs(
        cache, [i.id for i in infos], metric, chosen, args.tokens, significance=False
    )
    empty = [i for i in infos if all(c.run_id != i.id for c in comparison.curves)]
    if empty:
        raise CacheError(no_samples_message(cache, empty, args.tokens))
    table = paper_table(infos, comparison.curves, metric, chosen[0], args.tokens)
    sys.stdout.write(render_table(table, args.format, short_model))
    return 0
