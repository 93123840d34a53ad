"""The checks of a cache file as a whole: the variables the cache reads, its write-ahead log and
its schema version.

Why apart from the checks of runs and rows: these look at the file, not at what it stores, and
they decide whether the rest can be read at all. A file that is not a cache, a schema newer than
this layerscope's or tables that are missing stop the examination there; a damaged version
record is answered with the version the file's tables match
(:func:`~layerscope.analysis.cache.migrations.tables_version`) and the statement that puts it
back, shown and never run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from layerscope.analysis.base.environment import EnvironmentVariableError, text_from_env
from layerscope.analysis.cache import liveness
from layerscope.analysis.cache.connection import (
    DEFAULT_LOCK_TIMEOUT,
    block_size,
    default_lock_timeout,
    wal_checkpoint_size,
)
from layerscope.analysis.cache.health.report import HealthReport, size_text
from layerscope.analysis.cache.migrations import created_tables, tables_version
from layerscope.analysis.cache.schema import (
    SCHEMA_VERSION,
    SchemaVersionUnreadable,
    schema_version,
    table_columns,
)
from layerscope.analysis.cache.write_ahead_log import replayed_log_bytes, wal_path

__all__ = ["check_environment", "check_log", "check_schema"]


def check_environment(report: HealthReport) -> float:
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


def check_log(report: HealthReport, con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Check whether the write-ahead log replays completely."""
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
            f"{wal} ({size_text(size)}) replays completely; it is folded into the file at the next "
            "checkpoint",
        )
        return
    if liveness.writer_is_live(path) is liveness.Claim.HELD:
        # a compute writes the log right now: its last entry is being written, not damaged
        report.add(
            "wal",
            "note",
            f"{wal} ({size_text(size)}) is being written by a compute running now (about "
            f"{size_text(low)} of it replays so far); ask again when it ends",
        )
        return
    report.add(
        "wal",
        "problem",
        f"{wal} ends in an incomplete entry: about {size_text(low)} of its {size_text(size)} "
        "replay (a writer killed mid-write, or a truncated copy); batches in the rest are not "
        "stored: the runs they belong to are interrupted and the same command recomputes them",
    )


def check_schema(
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
