"""The health of a cache file: what ``layerscope doctor`` checks, and the two repairs it makes.

Why a module of its own: a damaged cache used to surface as whatever the first query tripped
over (DuckDB's checksum message, "no runs" for a file full of them, an internal KeyError), and
the user had no way to ask "what is wrong with this file, and what do I do?". :func:`examine`
answers that: it looks at the file from the outside in (the file, its write-ahead log, the schema
version, the environment variables the cache reads, then the runs and their rows) and returns
one :class:`Finding` per line, each saying what it found and, when something needs doing, what.

Examining never changes the file: it connects read-only, without the schema upgrade every other
reader does, and never creates a file that does not exist. Only two calls change it, each on
request and after a copy of the file is made beside it (``<db>.backup-<UTC time>``, with its
log when it has one, so the copy opens as the file was):

* :func:`set_aside_wal` moves a damaged write-ahead log to ``<db>.wal.damaged-<UTC time>``. What
  that loses is the batches written since the last checkpoint, and the cache was refusing to
  open with them anyway; the runs they belonged to resume and recompute them;
* :func:`repair` removes rows that belong to no run or no stored sample, drops second copies of
  rows stored twice with the same values, and recomputes every run's curve sums from its
  statistics rows (the rows are the record; the sums are derived from them). Copies that
  differ are reported, never chosen between.

Which checks need which tables is decided by the tables present, so an older file (before
version 2) is checked as far as it goes. The curve-sum check recomputes the sums with the same
SQL the schema's rebuild uses (:func:`~.schema.curve_sums_query`) and compares within float
tolerance (the write path adds the same float32 values in another order).

Doctor is what a user runs on a cache that misbehaves, which may be a whole study's (hundreds of
runs, tens of millions of rows) on the machine the explorer runs on, so it reads the file in
bounded memory: DuckDB's memory on its connection is capped, rows are compared and counted in
SQL instead of fetched, and the checks that group rows (duplicates, curve sums) take a bounded
part of the cache at a time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.environment import EnvironmentVariableError, text_from_env
from layerscope.analysis.base.errors import one_line
from layerscope.analysis.base.records import MATRIX_STATISTICS
from layerscope.analysis.cache.connection import (
    DEFAULT_LOCK_TIMEOUT,
    CacheFile,
    block_size,
    default_lock_timeout,
    pid_alive,
    wal_checkpoint_size,
)
from layerscope.analysis.cache.errors import CacheError, CacheLockedError, DamagedLogError
from layerscope.analysis.cache.migrations import created_tables, tables_version
from layerscope.analysis.cache.schema import (
    SCHEMA_VERSION,
    SchemaVersionUnreadable,
    curve_sums_query,
    rebuild_curve_sums,
    schema_version,
    table_columns,
    table_names,
)
from layerscope.analysis.cache.write_ahead_log import replayed_log_bytes, wal_path

__all__ = ["Finding", "HealthReport", "examine", "repair", "set_aside_wal"]

SEVERITIES = ("ok", "note", "problem")  # a problem needs action; a note is worth knowing
# Relative tolerance of the curve-sum check (float64 sums of the same float32 values).
SUM_TOLERANCE = 1e-7
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
# Statistics rows whose curve sums one query recomputes (it holds a few values per entry of its
# runs, and returns a row per run).
SUMS_PART_ROWS = 2_000_000
# DuckDB's memory on doctor's connection, and its threads (each thread's hash tables and scan
# buffers add to the memory; the checks are scans that a few threads keep up with).
MEMORY_LIMIT = "256MB"
MAX_THREADS = 4


@dataclass(frozen=True)
class Finding:
    """One line of a health report: which check, how serious, and what it says to do."""

    check: str  # file, wal, schema, environment, runs, interrupted, sums, orphans, duplicates
    severity: str  # one of SEVERITIES
    message: str
    run_id: str | None = None  # the run it is about, when it is about one


@dataclass
class HealthReport:
    """Everything :func:`examine` found, and what a repair did before it looked."""

    path: Path
    findings: list[Finding] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "problem" for f in self.findings)

    def add(self, check: str, severity: str, message: str, run_id: str | None = None) -> None:
        assert severity in SEVERITIES
        self.findings.append(Finding(check, severity, message, run_id))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "healthy": self.healthy,
            "actions": list(self.actions),
            "findings": [asdict(f) for f in self.findings],
        }


def _size(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


# ---- examining --------------------------------------------------------------------------------


def _environment(report: HealthReport) -> float:
    """Check every variable the cache reads; returns the lock timeout to use."""
    timeout = DEFAULT_LOCK_TIMEOUT
    for name, reader in (
        ("LAYERSCOPE_LOCK_TIMEOUT", default_lock_timeout),
        ("LAYERSCOPE_BLOCK_SIZE", block_size),
        ("LAYERSCOPE_WAL_CHECKPOINT", wal_checkpoint_size),
    ):
        text = text_from_env(name)
        if text is None:
            continue
        try:
            value = reader()
        except EnvironmentVariableError as error:
            report.add("environment", "problem", str(error))
            continue
        report.add("environment", "ok", f"{name}={text}: valid")
        if name == "LAYERSCOPE_LOCK_TIMEOUT":
            timeout = float(value)
    return timeout


def _log(report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path) -> None:
    wal = wal_path(path)
    size = wal.stat().st_size if wal.exists() else 0
    if size == 0:
        report.add("wal", "ok", "no write-ahead log: everything is in the main file")
        return
    low, high = replayed_log_bytes(con)
    if high >= size:
        report.add(
            "wal",
            "ok",
            f"{wal} ({_size(size)}) replays completely; it is folded into the file at the next "
            "checkpoint",
        )
        return
    report.add(
        "wal",
        "problem",
        f"{wal} ends in an incomplete entry: about {_size(low)} of its {_size(size)} replay "
        "(a writer killed mid-write, or a truncated copy); batches in the rest are not stored: "
        "the runs they belong to are interrupted and the same command recomputes them",
    )


def _schema(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]
) -> bool:
    """Check the schema version; returns whether the rows can be checked."""
    matched = tables_version(table_columns(con))
    try:
        version = schema_version(con)
    except SchemaVersionUnreadable as unreadable:
        if matched is None:
            advice = "its tables are no layerscope schema's: restore it from a backup"
        else:
            advice = (
                f"its tables are those of schema version {matched}: restore the file from a "
                "backup, or, if nothing else was changed, copy it and set the version back: "
                f'duckdb {path} "{_set_version_sql(matched)}"'
            )
        report.add("schema", "problem", f"{path}: {unreadable}; {advice}")
        return matched is not None
    if version is None:
        report.add(
            "schema",
            "problem",
            f"{path} is a DuckDB file but not a layerscope cache (no schema version): "
            "use another --db",
        )
        return False
    if version == 0:
        report.add("schema", "ok", "an empty DuckDB file: nothing stored yet")
        return False
    if version > SCHEMA_VERSION:
        report.add(
            "schema",
            "problem",
            f"schema version {version} is newer than the {SCHEMA_VERSION} this layerscope "
            "knows: upgrade layerscope (doctor checks no further)",
        )
        return False
    expected = {t for v in range(1, version + 1) for t in created_tables(v)}
    missing = sorted(expected - tables)
    if missing:
        report.add(
            "schema",
            "problem",
            f"schema version {version}, but table(s) {', '.join(missing)} are missing: restore "
            "the file from a backup",
        )
        return "runs" in tables
    if version < SCHEMA_VERSION:
        report.add(
            "schema",
            "note",
            f"schema version {version}, older than {SCHEMA_VERSION}: layerscope upgrades it in "
            "place the next time it opens it",
        )
    else:
        report.add("schema", "ok", f"schema version {version} (current)")
    return True


def _set_version_sql(version: int) -> str:
    """The statement a user can run to put a damaged version record back (shown, not run)."""
    return f"UPDATE layerscope_meta SET value = '{version}' WHERE key = 'schema_version'"  # noqa: S608 (shown to the user, never executed here)


@dataclass
class _Run:
    number: int
    id: str
    label: str
    status: str
    samples_total: int
    owner_pid: int | None
    owner_host: str | None
    provenance: dict[str, Any]
    stored: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return f"run {self.short_id} ({self.label})"


def _runs(con: duckdb.DuckDBPyConnection, tables: set[str]) -> dict[int, _Run]:
    rows = con.execute(
        "SELECT run_no, id, model, dataset, response_type, status, samples_total, owner_pid, "
        "owner_host, provenance FROM runs ORDER BY run_no"
    ).fetchall()
    found: dict[int, _Run] = {}
    for number, run_id, model, dataset, response_type, status, total, pid, host, prov in rows:
        try:
            provenance = json.loads(prov) if prov else {}
        except ValueError:
            provenance = {}
        found[int(number)] = _Run(
            int(number),
            run_id,
            f"{model} / {dataset}/{response_type}",
            status,
            int(total),
            None if pid is None else int(pid),
            host,
            provenance if isinstance(provenance, dict) else {},
        )
    if "samples" in tables:
        for number, count in con.execute(
            "SELECT run_no, count(*) FROM samples GROUP BY ALL"
        ).fetchall():
            if int(number) in found:
                found[int(number)].stored = int(count)
    if "skipped" in tables:
        for number, kind, count in con.execute(
            "SELECT run_no, kind, count(*) FROM skipped GROUP BY ALL"
        ).fetchall():
            if int(number) in found and kind in ("skipped", "failed"):
                setattr(found[int(number)], kind, int(count))
    return found


def _counts(report: HealthReport, runs: dict[int, _Run]) -> None:
    stored = sum(r.stored for r in runs.values())
    problems = 0
    for run in runs.values():
        recorded = run.provenance.get("samples_done")
        if run.status == "running" or not isinstance(recorded, int) or recorded == run.stored:
            continue
        if run.stored < recorded:
            problems += 1
            report.add(
                "runs",
                "problem",
                f"{run.name}: its last session recorded {recorded} samples but "
                f"{run.stored} are stored: the same command recomputes the missing ones",
                run.id,
            )
        else:
            report.add(
                "runs",
                "note",
                f"{run.name}: {run.stored} samples stored, {recorded} when its last session "
                "ended (another process added the rest)",
                run.id,
            )
    if not problems:
        report.add(
            "runs",
            "ok",
            f"{_plural(len(runs), 'run')}, {_plural(stored, 'sample')} stored"
            + (": counts agree with what their sessions recorded" if runs else ""),
        )


def _interrupted(report: HealthReport, runs: dict[int, _Run]) -> None:
    host = socket.gethostname()
    found = False
    for run in runs.values():
        if run.status != "running":
            continue
        found = True
        progress = f"{run.stored} of {run.samples_total} samples stored"
        if run.owner_host not in (None, host):
            report.add(
                "interrupted",
                "note",
                f"{run.name}: running on host {run.owner_host} (PID {run.owner_pid}) or "
                f"interrupted there ({progress}); this host cannot tell",
                run.id,
            )
        elif run.owner_pid is not None and (
            run.owner_pid == os.getpid() or pid_alive(run.owner_pid)
        ):
            report.add(
                "interrupted",
                "note",
                f"{run.name}: being computed by PID {run.owner_pid} right now ({progress})",
                run.id,
            )
        else:
            report.add(
                "interrupted",
                "problem",
                f"{run.name}: interrupted: {progress}; the same command resumes",
                run.id,
            )
    if not found:
        report.add("interrupted", "ok", "no interrupted runs")


def _compared_sums(statistic: str, first: int, last: int) -> tuple[str, list[object]]:
    """SQL (and its parameters) comparing the stored curve sums of ``statistic`` with the sums
    recomputed from the statistics rows, for the runs numbered ``first`` to ``last``: per
    run, its entries (projection and layer), how many disagree, and the first that does (in
    projection and layer order).

    The recomputing SQL is the schema's rebuild's (:func:`~.schema.curve_sums_query`), run on
    those runs' rows alone: a common table expression named ``statistics`` stands for the
    table, not materialized, so the rows are scanned, never held. An entry disagrees when
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


def _sums(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, runs: dict[int, _Run]
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
            f"curve sums of {_plural(len(entries), 'run')} agree with their statistics rows",
        )


def _orphans(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]
) -> None:
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


def _orphan_queries(tables: set[str]) -> Iterator[tuple[str, str]]:
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
    for table, where in _orphan_queries(tables):
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


def _duplicates(
    report: HealthReport,
    con: duckdb.DuckDBPyConnection,
    path: Path,
    tables: set[str],
    runs: dict[int, _Run],
) -> None:
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
            f"{run.name}: {_plural(duplicated, 'row')} stored more than once; {advice}",
            run.id,
        )


@contextlib.contextmanager
def _reading(path: Path, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection without the schema check or upgrade other readers do, in bounded
    memory: DuckDB's buffer pool (the file's blocks it keeps, and the checks' hash tables) is
    capped at :data:`MEMORY_LIMIT` instead of its default 80% of the machine's memory, what
    outgrows it spills to a temporary folder of the system's (never beside the cache, which
    doctor leaves as it is), and results need not keep the rows' order."""
    with tempfile.TemporaryDirectory(prefix="layerscope-doctor-") as spill:
        con = CacheFile(path, timeout).open(write=False)
        try:
            con.execute("SET memory_limit = ?", [MEMORY_LIMIT])
            con.execute("SET threads = ?", [min(os.cpu_count() or 1, MAX_THREADS)])
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET temp_directory = ?", [spill])
            yield con
        finally:
            con.close()


def examine(path: Path | str, report: HealthReport | None = None) -> HealthReport:
    """Check the cache file at ``path`` and say what is found (see the module docs).

    Raises :class:`CacheError` when there is no file at ``path`` (nothing is created).
    """
    path = Path(path).expanduser()
    report = report if report is not None else HealthReport(path)
    if not path.exists():
        orphan_log = " (only its write-ahead log)" if wal_path(path).exists() else ""
        raise CacheError(f"no cache at {path}{orphan_log}")
    timeout = _environment(report)
    if path.is_dir():
        report.add("file", "problem", f"{path} is a folder, not a cache file: use another --db")
        return report
    try:
        with _reading(path, timeout) as con:
            report.findings.insert(
                0, Finding("file", "ok", f"{path}: a DuckDB file, {_size(path.stat().st_size)}")
            )
            _log(report, con, path)
            tables = table_names(con)
            if _schema(report, con, path, tables) and "runs" in tables:
                _rows(report, con, path, tables)
    except DamagedLogError as error:
        report.add("wal", "problem", str(error))
    except CacheLockedError as error:
        report.add("file", "problem", str(error))
    except CacheError as error:
        report.add("file", "problem", str(error))
    except duckdb.Error as error:
        report.add("file", "problem", f"{path}: reading it failed: {one_line(error)}")
    return report


def _rows(
    report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path, tables: set[str]
) -> None:
    runs = _runs(con, tables)
    _counts(report, runs)
    _interrupted(report, runs)
    if {"curve_sums", "statistics"} <= tables:
        _sums(report, con, path, runs)
    _orphans(report, con, path, tables)
    _duplicates(report, con, path, tables, runs)


# ---- repairs ------------------------------------------------------------------------------------


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _beside(path: Path, suffix: str) -> Path:
    """A free name beside ``path`` (a second repair in the same second gets ``-2``)."""
    for attempt in range(1, 1000):
        target = path.with_name(path.name + suffix + (f"-{attempt}" if attempt > 1 else ""))
        if not target.exists() and not wal_path(target).exists():
            return target
    raise CacheError(f"{path.with_name(path.name + suffix)} and 998 more exist already")


def _backup(path: Path, stamp: str, report: HealthReport, with_log: bool) -> None:
    backup = _beside(path, f".backup-{stamp}")
    shutil.copy2(path, backup)
    wal = wal_path(path)
    if with_log and wal.exists():
        shutil.copy2(wal, wal_path(backup))
        report.actions.append(f"copied {path} and its write-ahead log to {backup}")
    else:
        report.actions.append(f"copied {path} to {backup}")


def _log_is_damaged(path: Path) -> str | None:
    """The damaged-log message when the file's log cannot be replayed, else None."""
    try:
        with _reading(path, default_timeout()):
            return None
    except DamagedLogError as error:
        return str(error)


def default_timeout() -> float:
    try:
        return default_lock_timeout()
    except EnvironmentVariableError:
        return DEFAULT_LOCK_TIMEOUT


def set_aside_wal(path: Path | str) -> HealthReport:
    """Back the file up, move its damaged write-ahead log aside, and examine what is left.

    Refuses (:class:`CacheError`) a file without a log or whose log replays: then there is
    nothing to set aside, and moving it would lose batches the cache can still read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CacheError(f"no cache at {path}")
    wal = wal_path(path)
    if not wal.exists():
        raise CacheError(f"{path} has no write-ahead log: nothing to set aside")
    if _log_is_damaged(path) is None:
        raise CacheError(
            f"{wal} is not damaged (DuckDB replays it): nothing to set aside; "
            f"`layerscope doctor --db {path}` says what else it finds"
        )
    report = HealthReport(path)
    stamp = _stamp()
    _backup(path, stamp, report, with_log=False)
    aside = _beside(path, f".wal.damaged-{stamp}")
    wal.rename(aside)
    report.actions.append(
        f"moved {wal} to {aside}: the batches it held are recomputed when their runs resume"
    )
    examine(path, report)
    reads = all(
        f.check not in ("file", "wal", "schema") or f.severity != "problem" for f in report.findings
    )
    report.actions.append("the cache reads again" if reads else "the cache still does not read")
    return report


def repair(path: Path | str) -> HealthReport:
    """Back the file up, remove orphaned rows and identical second copies, recompute the
    curve sums, and examine the result (see the module docs)."""
    path = Path(path).expanduser()
    before = examine(path)
    blocking = [
        f
        for f in before.findings
        if f.severity == "problem" and f.check in ("file", "wal", "schema", "environment")
    ]
    if blocking:
        raise CacheError(f"cannot repair {path} yet: {blocking[0].message}")
    report = HealthReport(path)
    _backup(path, _stamp(), report, with_log=True)
    file = CacheFile(path, default_timeout())
    with file.transaction() as con:
        tables = table_names(con)
        removed = []
        for table, where in _orphan_queries(tables):
            count = con.execute(f"DELETE FROM {table} WHERE {where}").fetchone()  # noqa: S608 (constant names)
            if count and count[0]:
                removed.append(f"{count[0]} in {table}")
        if removed:
            report.actions.append(f"removed orphaned rows: {', '.join(removed)}")
        dropped = []
        for table in KEYED_TABLES:
            if table not in tables:
                continue
            second_copies = (
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "  # noqa: S608 (constant names)
                f"row_number() OVER (PARTITION BY t ORDER BY rowid) AS copy FROM {table} t) "
                "WHERE copy > 1)"
            )
            count = con.execute(second_copies).fetchone()
            if count and count[0]:
                dropped.append(f"{count[0]} in {table}")
        if dropped:
            report.actions.append(f"removed identical second copies: {', '.join(dropped)}")
        if "curve_sums" in tables:
            rebuild_curve_sums(con)
            report.actions.append("recomputed every run's curve sums from its statistics rows")
    file.checkpoint()
    return examine(path, report)
