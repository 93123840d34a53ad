"""The two repairs ``layerscope doctor`` makes, each on request and after a backup of the file.

Why apart from the checks: examining never changes the file, and these are the only calls that
do. Each first copies the file beside itself (``<db>.backup-<UTC time>``, with its log when it
has one, so the copy opens as the file was), then examines what it left:

* :func:`set_aside_wal` moves a damaged write-ahead log to ``<db>.wal.damaged-<UTC time>``. What
  that loses is the batches written since the last checkpoint, and the cache was refusing to
  open with them anyway; the runs they belonged to resume and recompute them;
* :func:`repair` removes rows that belong to no run or no stored sample, drops second copies of
  rows stored twice with the same values, and recomputes every run's curve sums from its
  statistics rows (the rows are the record; the sums are derived from them). Copies that
  differ are reported, never chosen between.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from layerscope.analysis.base.environment import EnvironmentVariableError
from layerscope.analysis.cache.connection import (
    DEFAULT_LOCK_TIMEOUT,
    CacheFile,
    default_lock_timeout,
)
from layerscope.analysis.cache.errors import CacheError, DamagedLogError
from layerscope.analysis.cache.health.examining import examine, reading
from layerscope.analysis.cache.health.report import HealthReport
from layerscope.analysis.cache.health.stray_rows import KEYED_TABLES, orphan_queries
from layerscope.analysis.cache.schema import rebuild_curve_sums, table_names
from layerscope.analysis.cache.write_ahead_log import wal_path

__all__ = ["default_timeout", "repair", "set_aside_wal"]


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
        with reading(path, default_timeout()):
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
        for table, where in orphan_queries(tables):
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
