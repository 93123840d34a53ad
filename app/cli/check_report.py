"""``check``'s profile on one screen: one chart and one table.

Why not ``show``'s report: ``show`` draws a chart per projection, the MAD and relative
difference tables and every test's notes (about 150 lines for four types), which is what a study
needs and more than a quick look at a model can take in. A check answers two questions at a
glance: how the statistic runs with depth for each response type (one chart, the projections
averaged, :func:`~layerscope.analysis.results.profiles.projection_means`), and where each type
differs from its baseline (one table: each projection's mean over layers, and the layers whose
paired tests differ). ``show RUN ...`` on the same runs gives the whole report; ``--json`` gives
``show``'s record.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from layerscope.app.cli import charting

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.cache.runs import RunInfo
    from layerscope.analysis.curves.significance import ProjectionSignificance
    from layerscope.analysis.results.compare import Comparison


def report_profile(
    cache: ResultsCache,
    infos: Sequence[RunInfo],
    args: argparse.Namespace,
    pairs: Sequence[tuple[str, str]],
    title: str,
) -> int:
    """Print the profile of ``infos`` (one chart, one table), or ``show``'s JSON record."""
    from layerscope.analysis.results.profiles import projection_means
    from layerscope.app.cli.browsing import compared, metric_name, report

    if args.json or metric_name(args.metric) == "loss":
        return report(cache, infos, args, pairs, title)
    _metric, comparison, labels = compared(cache, infos, args, pairs)
    names = list(dict.fromkeys(c.projection for c in comparison.curves))
    averaged = replace(
        comparison, curves=projection_means(comparison.curves, f"mean of {'+'.join(names)}")
    )
    (chart,) = charting.charts(averaged, labels, title, args.width, args.height)
    print(chart)
    print(profile_table(comparison, labels, names))
    print(f"full report: layerscope show {' '.join(i.short_id for i in infos)}")
    return 0


def profile_table(comparison: Comparison, labels: Mapping[str, str], names: Sequence[str]) -> str:
    """Two small tables that fit 80 columns: each run's mean over layers per projection, then
    per compared pair and projection the layers where b differs from a (Benjamini-Hochberg
    q < 0.05 over the layers)."""
    means: dict[tuple[str, str], float] = {}
    counts: dict[str, int] = {}
    for curve in comparison.curves:
        values = [v for v in curve.mean if not math.isnan(v)]
        means[curve.run_id, curve.projection] = sum(values) / len(values) if values else math.nan
        counts[curve.run_id] = max(counts.get(curve.run_id, 0), max(curve.count, default=0))
    runs = list(dict.fromkeys(c.run_id for c in comparison.curves))

    def label(run: str) -> str:
        return labels.get(run, run[:8])

    width = max(len(label(r)) for r in runs)
    lines = [
        f"{comparison.metric}, mean over layers",
        f"{'':{width}}  {'n':>3}" + "".join(f"  {p:>8}" for p in names),
    ]
    for run in runs:
        cells = "".join(f"  {means.get((run, p), math.nan):>8.4g}" for p in names)
        lines.append(f"{label(run):{width}}  {counts[run]:>3}{cells}")
    pairs: dict[tuple[str, str], dict[str, ProjectionSignificance]] = {}
    for test in comparison.significance:
        pairs.setdefault((test.run_a, test.run_b), {})[test.projection] = test
    if pairs:
        named = {pair: f"{label(pair[1])} vs {label(pair[0])}" for pair in pairs}
        width = max(len(text) for text in named.values())
        layers = max(len(t.layers) for tests in pairs.values() for t in tests.values())
        lines += [
            "",
            f"layers of {layers} where b differs from a (paired tests, BH q < 0.05)",
            f"{'b vs a':{width}}" + "".join(f"  {p:>5}" for p in names),
        ]
        for pair, tests in pairs.items():
            cells = "".join(f"  {len(tests[p].differing) if p in tests else '-':>5}" for p in names)
            lines.append(f"{named[pair]:{width}}{cells}")
    return "\n".join(lines)
