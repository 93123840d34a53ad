"""The two repairs ``layerscope doctor`` makes, each on request and after a backup of the file.

Why apart from the checks: examining never changes the file, and these are the only calls that
do. Each first copies the file beside itself (``<db>.backup-<UTC time>``, with its log when it
has one, so the copy opens as the file was), then examines what it left. A backup is a file
the repair creates (``O_CREAT | O_EXCL``), never one it writes through: a name already taken,
even by a symbolic link planted there that points elsewhere, is left alone and the next free
name (``-2``, ``-3``, ...) is used, as the report says; the log set aside is hard-linked to its
new name, so it replaces nothing either.

* :func:`set_aside_wal` moves a damaged write-ahead log to ``<db>.wal.damaged-<UTC time>``. What
  that loses is the batches written since the last checkpoint, and the cache was refusing to
  open with them anyway; the runs they belonged to resume and recompute them;
* :func:`repair` removes rows that belong to no run or no stored sample, drops second copies of
  rows stored twice with the same values, and recomputes every run's curve sums from its
  statistics rows (the rows are the record; the sums are derived from them). Copies that
  differ are reported, never chosen between.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from layerscope.analysis.base.environment import EnvironmentVariableError
from layerscope.analysis.cache import liveness
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


def _names_beside(path: Path, suffix: str) -> Iterator[Path]:
    """The names beside ``path`` to try in turn (a second repair in the same second gets
    ``-2``, ...)."""
    for attempt in range(1, 1000):
        yield path.with_name(path.name + suffix + (f"-{attempt}" if attempt > 1 else ""))


def _taken(first: Path, used: Path) -> str:
    """What the report says when the first name was taken (by a file, or by a symbolic link
    that nothing is written through), else nothing."""
    if used == first:
        return ""
    what = "a symbolic link" if first.is_symlink() else "something"
    return f" ({first} was already {what}, left as it is)"


def _none_free(path: Path, suffix: str) -> CacheError:
    return CacheError(
        f"{path.with_name(path.name + suffix)} and 998 more names beside it are taken: nothing "
        "was changed; move them away and try again"
    )


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` (its bytes, permissions and times) to ``target``, a file this creates:
    FileExistsError when anything is at ``target``, a symbolic link included, which is never
    followed (O_CREAT | O_EXCL), so nothing is written outside the folder."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    found = source.stat()
    descriptor = os.open(target, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out, 1 << 20)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(found.st_mode))
            os.utime(out.fileno(), ns=(found.st_atime_ns, found.st_mtime_ns))
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _backup(path: Path, stamp: str, report: HealthReport, with_log: bool) -> None:
    """Copy the file (and its log, when asked and present) to the first free backup name; a
    name taken by anything (a symbolic link planted there included) is left alone."""
    suffix = f".backup-{stamp}"
    wal = wal_path(path)
    log = with_log and wal.exists()
    first = next(_names_beside(path, suffix))
    for backup in _names_beside(path, suffix):
        if log and os.path.lexists(wal_path(backup)):
            continue
        try:
            _copy_new(path, backup)
        except FileExistsError:
            continue
        except OSError as error:
            raise CacheError(
                f"cannot back {path} up to {backup}: {error.strerror or error}"
            ) from None
        if log:
            try:
                _copy_new(wal, wal_path(backup))
            except FileExistsError:  # taken since it was looked at: the next name
                backup.unlink()
                continue
            except OSError as error:
                backup.unlink()
                raise CacheError(
                    f"cannot back {wal} up to {wal_path(backup)}: {error.strerror or error}"
                ) from None
            report.actions.append(
                f"copied {path} and its write-ahead log to {backup}{_taken(first, backup)}"
            )
        else:
            report.actions.append(f"copied {path} to {backup}{_taken(first, backup)}")
        return
    raise _none_free(path, suffix)


def _move_aside(path: Path, wal: Path, suffix: str) -> Path:
    """Move ``wal`` (the log of ``path``) to the first free name beside them, never replacing anything (a hard link
    made exclusively, then the old name removed; a rename checked first where the file system
    has no hard links), so nothing planted at a name is replaced or followed."""
    for aside in _names_beside(path, suffix):
        try:
            os.link(wal, aside, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(aside):
                continue
            wal.rename(aside)
            return aside
        wal.unlink()
        return aside
    raise _none_free(path, suffix)


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
    aside = _move_aside(path, wal, f".wal.damaged-{stamp}")
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
    if liveness.ensure_lock_file(path):
        report.actions.append(
            f"created {liveness.live_path(path).name} beside the cache: a run is being computed "
            "only while its compute holds its lock there (a claim by a stored PID alone, which "
            "another process may have now, no longer keeps a run from resuming)"
        )
    return examine(path, report)
