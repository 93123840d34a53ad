"""Examining a cache file: the checks in their order, on a read-only connection in bounded
memory.

Why a module of its own: :func:`examine` is what ``layerscope doctor`` runs and what each repair
runs on its result. It looks at the file from the outside in (the file, its write-ahead log, the
schema version, the environment variables the cache reads, then the runs and their rows) and
runs the checks the tables present allow, so an older file (before version 2) is checked as far
as it goes. It never changes the file: it connects read-only (:func:`reading`), without the
schema upgrade every other reader does, and never creates a file that does not exist.

Doctor is what a user runs on a cache that misbehaves, which may be a whole study's (hundreds of
runs, tens of millions of rows) on the machine the explorer runs on, so its connection caps
DuckDB's memory (:data:`MEMORY_LIMIT`) and the checks count and compare in SQL, a bounded part of
the cache at a time, instead of fetching rows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

from layerscope.analysis.base.errors import one_line
from layerscope.analysis.cache.connection import CacheFile
from layerscope.analysis.cache.errors import CacheError, CacheLockedError, DamagedLogError
from layerscope.analysis.cache.health.file_checks import check_environment, check_log, check_schema
from layerscope.analysis.cache.health.report import Finding, HealthReport, size_text
from layerscope.analysis.cache.health.run_checks import (
    check_counts,
    check_interrupted,
    examined_runs,
)
from layerscope.analysis.cache.health.stray_rows import check_duplicates, check_orphans
from layerscope.analysis.cache.health.sum_checks import check_sums
from layerscope.analysis.cache.schema import table_names
from layerscope.analysis.cache.write_ahead_log import wal_path

__all__ = ["MAX_THREADS", "MEMORY_LIMIT", "examine", "reading"]

# DuckDB's memory on doctor's connection, and its threads (each thread's hash tables and scan
# buffers add to the memory; the checks are scans that a few threads keep up with). At 64 MB the
# whole process peaked at 157 MB on 15,000 samples and 193 MB on 150,000 (256 MB: 185 and 427
# MB, and slower: 9.5 s against 8.1 s on the larger); what outgrows it spills.
MEMORY_LIMIT = "64MB"
MAX_THREADS = 4


@contextlib.contextmanager
def reading(path: Path, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
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
    timeout = check_environment(report)
    if path.is_dir():
        report.add("file", "problem", f"{path} is a folder, not a cache file: use another --db")
        return report
    try:
        with reading(path, timeout) as con:
            report.findings.insert(
                0, Finding("file", "ok", f"{path}: a DuckDB file, {size_text(path.stat().st_size)}")
            )
            check_log(report, con, path)
            tables = table_names(con)
            if check_schema(report, con, path, tables) and "runs" in tables:
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
    runs = examined_runs(con, tables)
    check_counts(report, runs)
    check_interrupted(report, path, runs)
    if {"curve_sums", "statistics"} <= tables:
        check_sums(report, con, path, runs)
    check_orphans(report, con, path, tables)
    check_duplicates(report, con, path, tables, runs)
