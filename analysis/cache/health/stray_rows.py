"""Rows that should not be there: orphans (rows of no run or of no stored sample) and duplicates
(a key stored more than once), as the checks find them and as the repair removes them.

Why together: both are about which rows a table holds, not about their values, and what the
check counts is what ``--repair`` removes: the repair deletes the rows :func:`orphan_queries`
selects and deduplicates the :data:`KEYED_TABLES`. Keys are grouped a bounded part of a table at
a time (:data:`DUPLICATES_PART_ROWS` rows), so memory stays that of one part however big the
cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import duckdb

from layerscope.analysis.cache.health.report import HealthReport, plural
from layerscope.analysis.cache.health.run_checks import ExaminedRun

__all__ = [
    "DUPLICATES_PART_ROWS",
    "KEYED_TABLES",
    "RUN_TABLES",
    "SAMPLE_TABLES",
    "check_duplicates",
    "check_orphans",
    "orphan_queries",
]

# Tables whose rows belong to a run (run_no), and those whose rows belong to a stored sample.
RUN_TABLES = (
    "samples",
    "statistics",
    "skipped",
    "targets",
    "spectra",
    "curve_sums",
    "cosine_sums",
    "sample_fields",
    "sample_cosines",
)
SAMPLE_TABLES = ("statistics", "spectra", "sample_fields", "sample_cosines")
# Tables that hold one row per key, and the key (duplicates are checked on these).
KEYED_TABLES = {
    "samples": ("run_no", "sample_index"),
    "statistics": ("run_no", "sample_index", "layer", "projection"),
    "spectra": ("run_no", "sample_index", "layer", "projection"),
    "sample_cosines": ("run_no", "sample_index", "kind", "name"),
}
# Rows of a keyed table whose keys the duplicates check groups at once: its memory, whatever the
# size of the cache.
DUPLICATES_PART_ROWS = 250_000


def check_orphans(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]
) -> None:
    """Count the rows that belong to no run or to no stored sample."""
    counts = _orphan_counts(con, tables)
    if not counts:
        report.add("orphans", "ok", "no rows without a run or a stored sample")
        return
    listed = ", ".join(f"{n} in {table}" for table, n in counts.items())
    report.add(
        "orphans",
        "problem",
        f"rows that belong to no run or to no stored sample: {listed} (a new run given a "
        f"missing run's number would take them for its own): `layerscope doctor --db {path} "
        "--repair` removes them",
    )


def orphan_queries(tables: set[str]) -> Iterator[tuple[str, str]]:
    """(table, WHERE clause selecting its orphaned rows) for each table present."""
    for table in RUN_TABLES:
        if table in tables and "runs" in tables:
            where = "run_no NOT IN (SELECT run_no FROM runs)"
            if table in SAMPLE_TABLES and "samples" in tables:
                where += (
                    " OR (run_no, sample_index) NOT IN (SELECT (run_no, sample_index) FROM samples)"
                )
            yield table, where


def _orphan_counts(con: duckdb.DuckDBPyConnection, tables: set[str]) -> dict[str, int]:
    counts = {}
    for table, where in orphan_queries(tables):
        row = con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()  # noqa: S608 (constant names)
        if row and row[0]:
            counts[table] = int(row[0])
    return counts


def _row_ranges(con: duckdb.DuckDBPyConnection, table: str) -> Iterator[tuple[int, int, int, int]]:
    """(first run_no, last run_no, first sample_index, last sample_index) of successive parts
    of ``table`` of at most about :data:`DUPLICATES_PART_ROWS` rows each: runs together while
    they are small, a run's samples in ranges when it alone is bigger. Every key of a keyed
    table holds its run and sample, so each part's keys can be grouped on their own."""
    runs = con.execute(
        f"SELECT run_no, count(*), min(sample_index), max(sample_index) FROM {table} "  # noqa: S608 (constant names)
        "GROUP BY run_no ORDER BY run_no"
    ).fetchall()
    pending: list[tuple[int, int, int, int]] = []  # runs gathered into the next part
    rows = 0
    for number, count, first, last in runs:
        if pending and rows + count > DUPLICATES_PART_ROWS:
            yield _spanning(pending)
            pending, rows = [], 0
        if count <= DUPLICATES_PART_ROWS:
            pending.append((number, count, first, last))
            rows += count
            continue
        parts = math.ceil(count / DUPLICATES_PART_ROWS)
        width = math.ceil((last - first + 1) / parts)
        for start in range(first, last + 1, width):
            yield number, number, start, min(last, start + width - 1)
    if pending:
        yield _spanning(pending)


def _spanning(runs: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return runs[0][0], runs[-1][0], min(r[2] for r in runs), max(r[3] for r in runs)


def _duplicate_counts(
    con: duckdb.DuckDBPyConnection, tables: set[str]
) -> dict[int, tuple[int, int]]:
    """Per run number: (keys stored more than once, of which with differing copies).

    Keys are grouped a part of the table at a time (:func:`_row_ranges`), so memory stays that
    of one part however big the cache. A first pass reads only the key columns; in a part where
    some key is stored more than once, the rows of those keys are read again, whole, to tell
    identical copies from differing ones (as ``--repair`` tells them: equal in every column).
    """
    found: dict[int, tuple[int, int]] = {}
    for table, key in KEYED_TABLES.items():
        if table not in tables:
            continue
        keys = ", ".join(key)
        part = "run_no BETWEEN ? AND ? AND sample_index BETWEEN ? AND ?"
        for bounds in _row_ranges(con, table):
            twice = con.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {part} "  # noqa: S608 (constant names)
                f"GROUP BY {keys} HAVING count(*) > 1)",
                list(bounds),
            ).fetchone()
            if not twice or not twice[0]:
                continue
            rows = con.execute(
                f"""
                WITH part AS NOT MATERIALIZED (SELECT * FROM {table} WHERE {part}),
                twice AS (SELECT {keys} FROM part GROUP BY {keys} HAVING count(*) > 1)
                SELECT run_no, count(*), count(*) FILTER (WHERE versions > 1) FROM (
                    SELECT {keys}, count(DISTINCT t) AS versions
                    FROM part t SEMI JOIN twice USING ({keys}) GROUP BY {keys}
                ) GROUP BY run_no
                """,  # noqa: S608 (constant table and column names)
                list(bounds),
            ).fetchall()
            for number, duplicated, differing in rows:
                old = found.get(int(number), (0, 0))
                found[int(number)] = (old[0] + int(duplicated), old[1] + int(differing))
    return found


def check_duplicates(
    report: HealthReport,
    con: duckdb.DuckDBPyConnection,
    path: Path,
    tables: set[str],
    runs: dict[int, ExaminedRun],
) -> None:
    """Name each run with keys stored more than once, and whether their copies differ."""
    found = {n: c for n, c in _duplicate_counts(con, tables).items() if n in runs}
    if not found:
        report.add("duplicates", "ok", "no sample stored twice")
        return
    for number, (duplicated, differing) in sorted(found.items()):
        run = runs[number]
        if differing:
            advice = (
                f"{differing} with differing values, which cannot be told apart: recompute the "
                "run into a new cache (--db) to trust its numbers"
            )
        else:
            advice = f"the copies are identical: `layerscope doctor --db {path} --repair` keeps one"
        report.add(
            "duplicates",
            "problem",
            f"{run.name}: {plural(duplicated, 'row')} stored more than once; {advice}",
            run.id,
        )
