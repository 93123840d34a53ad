"""The curve-sum check: every run's stored per-layer sums compared with its statistics rows.

Why a module of its own: the rows are the record and the sums are derived from them, so checking
the sums means recomputing them, the one check whose memory would grow with the cache if it were
done at once. It recomputes them with the same SQL the schema's rebuild uses
(:func:`~layerscope.analysis.cache.schema.curve_sums_query`), for a group of runs of at most
:data:`SUMS_PART_ROWS` rows at a time, and compares within float tolerance (the write path adds
the same float32 values in another order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.records import MATRIX_STATISTICS
from layerscope.analysis.cache.health.report import HealthReport, plural
from layerscope.analysis.cache.health.run_checks import ExaminedRun
from layerscope.analysis.cache.schema import curve_sums_query

__all__ = ["SUMS_PART_ROWS", "SUM_TOLERANCE", "check_sums"]

# Relative tolerance of the curve-sum check (float64 sums of the same float32 values).
SUM_TOLERANCE = 1e-7
# Statistics rows whose curve sums one query recomputes (it holds a few values per entry of its
# runs, and returns a row per run).
SUMS_PART_ROWS = 2_000_000


def _compared_sums(statistic: str, first: int, last: int) -> tuple[str, list[object]]:
    """SQL (and its parameters) comparing the stored curve sums of ``statistic`` with the sums
    recomputed from the statistics rows, for the runs numbered ``first`` to ``last``: per
    run, its entries (projection and layer), how many disagree, and the first that does (in
    projection and layer order).

    The recomputing SQL is the schema's rebuild's
    (:func:`~layerscope.analysis.cache.schema.curve_sums_query`), run on those runs' rows
    alone: a common table expression named ``statistics`` stands for the table, not
    materialized, so the rows are scanned, never held. An entry disagrees when
    either side is missing, the sample or non-finite counts differ, a stored sum is not finite
    (recomputed sums are of finite values only), or a sum differs by more than the float
    tolerance: relative to sqrt(n * sum of squares) for the total, since |sum x| is at most
    that, and to the larger of the two for the sum of squares.
    """
    recomputed, parameters = curve_sums_query(statistic)
    sql = f"""
        WITH statistics AS NOT MATERIALIZED (
            SELECT * FROM main.statistics WHERE run_no BETWEEN ? AND ?
        ),
        recomputed AS ({recomputed}),
        stored AS (SELECT * FROM curve_sums WHERE statistic = ? AND run_no BETWEEN ? AND ?),
        compared AS (
            SELECT run_no, projection, layer,
                   s.samples AS s_n, r.samples AS r_n, s.total AS s_total, r.total AS r_total,
                   s.squares AS s_squares, r.squares AS r_squares,
                   s.nonfinite_samples AS s_bad, r.nonfinite_samples AS r_bad
            FROM recomputed r FULL OUTER JOIN stored s
                USING (run_no, projection, layer, statistic)
        ),
        judged AS (
            SELECT *, (
                s_n IS NULL OR r_n IS NULL OR s_n <> r_n OR s_bad <> r_bad
                OR NOT isfinite(s_total) OR NOT isfinite(s_squares)
                OR abs(s_total - r_total) > ?
                    * sqrt(greatest(s_n, r_n, 1) * greatest(s_squares, r_squares, 0.0)) + 1e-300
                OR abs(s_squares - r_squares) > ?
                    * greatest(abs(s_squares), abs(r_squares)) + 1e-300
            ) AS disagrees
            FROM compared
        )
        SELECT run_no, count(*), count(*) FILTER (WHERE disagrees),
               arg_min({{'projection': projection, 'layer': layer, 's_n': s_n,
                         's_total': s_total, 'r_n': r_n, 'r_total': r_total}},
                       (projection, layer)) FILTER (WHERE disagrees)
        FROM judged GROUP BY run_no
    """  # noqa: S608 (the recomputing SQL is this package's; values are parameters)
    # the parameters in the order of their places in the SQL
    values = [first, last, *parameters, statistic, first, last, SUM_TOLERANCE, SUM_TOLERANCE]
    return sql, values


def _run_parts(counts: dict[int, int], limit: int) -> Iterator[tuple[int, int]]:
    """(first, last) run numbers of successive groups of the runs ``counts`` (run number: its
    rows) holding at most ``limit`` rows, or one run each, in run-number order."""
    first: int | None = None
    last = 0
    rows = 0
    for number in sorted(counts):
        if first is not None and rows + counts[number] > limit:
            yield first, last
            first, rows = None, 0
        if first is None:
            first = number
        last = number
        rows += counts[number]
    if first is not None:
        yield first, last


def _sum_example(statistic: str, entry: dict[str, Any]) -> str:
    where = f"{statistic}, {entry['projection']}, layer {entry['layer']}"
    if entry["s_n"] is None:
        return f"{where}: no stored sums"
    if entry["r_n"] is None:
        return f"{where}: sums of no statistics rows"
    return (
        f"{where}: {entry['s_n']} samples summing to {entry['s_total']:.6g} stored, "
        f"{entry['r_n']} summing to {entry['r_total']:.6g} in the rows"
    )


def check_sums(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, runs: dict[int, ExaminedRun]
) -> None:
    """Compare every run's curve sums with its statistics rows, a group of runs of at most
    :data:`SUMS_PART_ROWS` rows at a time, one statistic at a time (each query's memory is
    that of a few rows per entry of its runs, and it returns one row per run)."""
    counts = dict.fromkeys(runs, 0)
    for number, count in con.execute(
        "SELECT run_no, count(*) FROM statistics GROUP BY run_no"
    ).fetchall():
        if int(number) in counts:
            counts[int(number)] = int(count)
    entries: dict[int, int] = {}
    disagreeing: dict[int, int] = {}
    examples: dict[int, str] = {}  # the first disagreeing entry of each run, in statistic order
    for statistic in MATRIX_STATISTICS:
        for first, last in _run_parts(counts, SUMS_PART_ROWS):
            compared = _compared_sums(statistic, first, last)
            for number, count, wrong, example in con.execute(*compared).fetchall():
                if number not in runs:
                    continue  # rows of no run: the orphan check's
                entries[number] = entries.get(number, 0) + int(count)
                if wrong:
                    disagreeing[number] = disagreeing.get(number, 0) + int(wrong)
                    examples.setdefault(number, _sum_example(statistic, example))
    for number in sorted(disagreeing):
        run = runs[number]
        report.add(
            "sums",
            "problem",
            f"{run.name}: its curve sums disagree with its statistics rows in "
            f"{disagreeing[number]} of {entries[number]} entries (e.g. {examples[number]}): "
            f"`layerscope doctor --db {path} --repair` recomputes them from the rows",
            run.id,
        )
    if not disagreeing:
        report.add(
            "sums",
            "ok",
            f"curve sums of {plural(len(entries), 'run')} agree with their statistics rows",
        )
