"""Opening the cache file: short-lived connections, file locks, retries, error translation and
sessions.

Why this is one module's whole job (and why there is no long-lived connection): DuckDB lets
either one process open a file read-write or any number open it read-only, never both at once.
Users run ``layerscope compute`` in tmux and look at the results from the TUI or
``layerscope runs``/``show`` in another terminal while it runs. So nobody keeps the file open:

* every operation opens its own short-lived connection and closes it when done: read-only for
  reading, read-write for writing. The compute process holds the file only for the few
  milliseconds of one batch's transaction, not between batches, while the GPU works;
* an open that fails because another process holds a conflicting lock is retried with exponential
  backoff (10 ms doubling to 0.5 s) for up to ``lock_timeout`` seconds (default 30, or
  ``$LAYERSCOPE_LOCK_TIMEOUT``). Only a lock that outlasts that, say an interactive ``duckdb``
  shell left open on the file, becomes a :class:`CacheLockedError` naming the holder's PID as
  DuckDB reports it. The wait is longer while the holder works (a long import is one
  transaction): see :mod:`.lock_wait`;
* within one process (the TUI computes in a worker thread while its screens read) all operations
  on one file are serialised by a per-file lock, because DuckDB refuses two connections to the same
  file with different read-only settings in one process;
* readers see every batch as soon as its transaction commits, because each read opens the file
  afresh.

The first connection of a :class:`CacheFile` also checks the schema version and, when the file
is older, upgrades it (reopening it read-write if need be; the tables and migrations themselves
are in :mod:`.schema` and :mod:`.migrations`). Every other module of the cache gets its
connections from here, so the rules above hold for every read and write without being repeated.

Storage: files are created with 16 KiB blocks instead of DuckDB's 256 KiB, because a cache holds
many small tables and small runs (a 500-sample run of a 32-layer model takes about 3-4 MB). Writers
do not checkpoint at every close: the write-ahead log is folded into the main file when it passes
8 MB and when a run finishes. Checkpointing at every batch would rewrite the run's last, partly
filled row group each time, which fragments the file and makes every batch slower; readers pay
only a few milliseconds to replay a log of that size when they open the file.

What is opened: only a path where nothing is yet (a read answers "nothing stored", a write
creates the cache) or a regular file that carries DuckDB's mark (the bytes ``DUCK`` at offset 8
of its header), checked before DuckDB sees the path (:func:`~layerscope.analysis.cache.cache_path.check_cache_path`). DuckDB itself
would open many other things: a SQLite file through its ``sqlite`` extension (which it tries to
download), a ``.csv`` path as an empty in-memory database (so a merge "into" it copies runs into
memory and loses them), and a FIFO by blocking on it forever. Anything else is one line saying
what it is (a folder, a FIFO, a SQLite database, a CSV file, ...). An empty file is refused too,
as DuckDB refuses it: it may be a cache cut short by a full disk, and layerscope never writes
over a file it did not make; remove it to start a new cache there. Every connection is also
opened with extension auto-install and auto-load off (:data:`OFFLINE`), so nothing is ever
downloaded; the extensions layerscope uses (Parquet, JSON, ICU) are built into DuckDB's Python
package. ``enable_external_access`` stays on: exports write Parquet and CSV through DuckDB into a
private temporary folder, and doctor spills to one, which that setting would forbid.

A writer that stores into a run it began (:meth:`CacheFile.existing`) never creates the file: a
cache (or its folder) removed while a run is writing to it is one line saying it disappeared,
not a new empty cache in its place.

What DuckDB says when opening fails becomes one line of the cache's (:mod:`.errors`) with what
to do (:func:`open_error`), and a write-ahead log DuckDB ignored is refused right after
connecting, before a write could destroy it (:mod:`.write_ahead_log` tells damage from a log
that is merely short). The block size, log threshold and lock timeout come from
``$LAYERSCOPE_BLOCK_SIZE``, ``$LAYERSCOPE_WAL_CHECKPOINT`` and ``$LAYERSCOPE_LOCK_TIMEOUT``,
read through :mod:`layerscope.analysis.base.environment` when they are used, never at import.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.environment import integer_from_env, number_from_env, size_from_env
from layerscope.analysis.base.errors import one_line
from layerscope.analysis.base.locations import default_db_path as default_db_path
from layerscope.analysis.cache.cache_path import check_cache_path
from layerscope.analysis.cache.errors import (
    CacheError,
    CacheLockedError,
    DamagedLogError,
    SchemaVersionError,
)
from layerscope.analysis.cache.lock_wait import LockWait
from layerscope.analysis.cache.migrations import apply_migrations
from layerscope.analysis.cache.schema import (
    SCHEMA_VERSION,
    SchemaVersionUnreadable,
    schema_version,
)
from layerscope.analysis.cache.write_ahead_log import check_log_was_read, damaged_log_message

__all__ = ["OFFLINE", "CacheFile", "NoFile", "default_db_path"]

DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_BLOCK_SIZE = 16384
# Write-ahead log size at which a commit checkpoints into the main file (see module docs).
DEFAULT_WAL_CHECKPOINT = "8MB"
_FIRST_BACKOFF = 0.01
_MAX_BACKOFF = 0.5
# Every connection's settings: DuckDB never installs or loads an extension on its own (it would
# download it; see the module documentation).
OFFLINE: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


class NoFile(Exception):
    """Reading a cache file that does not exist yet: every read answers "nothing stored"."""


def default_lock_timeout() -> float:
    """``$LAYERSCOPE_LOCK_TIMEOUT`` seconds, else 30."""
    return number_from_env(
        "LAYERSCOPE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT, minimum=0, unit="seconds"
    )


def block_size() -> int:
    """``$LAYERSCOPE_BLOCK_SIZE``: the block size of a new file (DuckDB allows 16-256 KiB)."""
    return integer_from_env(
        "LAYERSCOPE_BLOCK_SIZE",
        DEFAULT_BLOCK_SIZE,
        minimum=16384,
        maximum=262144,
        power_of_two=True,
    )


def wal_checkpoint_size() -> int:
    """``$LAYERSCOPE_WAL_CHECKPOINT``: the log size (bytes) at which a commit checkpoints."""
    return size_from_env("LAYERSCOPE_WAL_CHECKPOINT", DEFAULT_WAL_CHECKPOINT)


_WAL_CHECKSUM = re.compile(r"byte position (\d+) computed checksum")


def open_error(path: Path, error: duckdb.Error) -> CacheError:
    """The one line for a DuckDB error while opening ``path``: what is wrong and what to do."""
    text = one_line(error)
    if "replaying WAL" in text or "Corrupt WAL" in text:
        position = _WAL_CHECKSUM.search(text)
        detail = (
            f"checksum mismatch at byte {position.group(1)}"
            if position
            else re.sub(r'^.*?WAL file "[^"]*":\s*', "", text)
        )
        return DamagedLogError(damaged_log_message(path, detail))
    if "not a valid DuckDB database file" in text:
        return CacheError(
            f"{path} is not a DuckDB file, so not a layerscope cache: use another --db"
        )
    return CacheError(f"{path}: {text}")


def now() -> datetime:
    """The current UTC time as stored (naive TIMESTAMP)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def aware(value: datetime | None) -> datetime | None:
    """A stored (naive UTC) timestamp as an aware datetime."""
    return value.replace(tzinfo=timezone.utc) if value is not None else None


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()
_PID_PATTERN = re.compile(r"PID (\d+)")


def _file_lock(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _FILE_LOCKS_GUARD:
        lock = _FILE_LOCKS.get(key)
        if lock is None:
            lock = _FILE_LOCKS[key] = threading.RLock()
        return lock


class _Session:
    """A session's connection (None until its first read), what closes it, and what its reads
    may keep: nothing writes the file while a session lasts, so a run looked up once (by id or
    prefix) is the same run for the rest of it."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.shared: duckdb.DuckDBPyConnection | None = None
        self.kept: dict[Any, Any] = {}
        self.after: list[Callable[[], None]] = []


# The session of each (file, thread) (see CacheFile.session): keyed by path, not by CacheFile,
# so that every ResultsCache of the file in that thread uses it.
_SESSIONS: dict[tuple[str, int], _Session] = {}


def _session_key(path: Path) -> tuple[str, int]:
    return str(path.resolve()), threading.get_ident()


def session_memo(path: Path) -> dict[Any, Any] | None:
    """What reads of ``path`` may keep for the rest of this thread's session (None outside
    one): the file does not change until the session ends."""
    session = _SESSIONS.get(_session_key(path)) if _SESSIONS else None
    return None if session is None else session.kept


def _is_lock_conflict(error: Exception) -> bool:
    return "Could not set lock on file" in str(error) or "Conflicting lock" in str(error)


class CacheFile:
    """One cache file and the rules for opening it (see the module documentation)."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.schema_ready = False
        self._existing = threading.local()

    @contextlib.contextmanager
    def existing(self) -> Iterator[None]:
        """Inside the block, this thread's writes never create the file: they store into a run
        that was begun in it, so a file (or folder) that is gone was removed while the run was
        writing, and is said to be (one line) instead of replaced by an empty cache."""
        before = getattr(self._existing, "on", False)
        self._existing.on = True
        try:
            yield
        finally:
            self._existing.on = before

    def _vanished(self) -> CacheError:
        folder = self.path.parent
        if not folder.is_dir():
            return CacheError(
                f"the folder {folder} disappeared while {self.path} in it was being written (it "
                "was removed or moved): nothing more is stored, and no new cache is created there"
            )
        return CacheError(
            f"{self.path} disappeared while it was being written (it was removed or moved): "
            "nothing more is stored, and no new cache is created in its place"
        )

    def open(self, write: bool) -> duckdb.DuckDBPyConnection:
        """Connect, retrying while another process holds a conflicting lock."""
        if not check_cache_path(self.path):
            if not write:
                raise NoFile
            if getattr(self._existing, "on", False):
                raise self._vanished()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CacheError(f"{self.path}: cannot create its folder: {error}") from None
        wait = LockWait(self.lock_timeout)
        delay = _FIRST_BACKOFF
        while True:
            if not self.path.exists():
                if not write:
                    raise NoFile
                if getattr(self._existing, "on", False):
                    raise self._vanished()
            try:
                if write and not self.path.exists():
                    # Small blocks keep small runs small (the default 256 KiB block would be
                    # mostly empty for a table of a few hundred rows).
                    config: dict[str, Any] = {**OFFLINE, "default_block_size": str(block_size())}
                    con = duckdb.connect(str(self.path), config=config)
                    # A new file has no schema, whatever an earlier file at this path had.
                    self.schema_ready = False
                    return con
                con = duckdb.connect(str(self.path), read_only=not write, config=OFFLINE)
            except duckdb.Error as error:
                if not _is_lock_conflict(error):
                    raise open_error(self.path, error) from None
                match = _PID_PATTERN.search(str(error))
                pid = int(match.group(1)) if match else None
                wait.holder(pid)
                if wait.over():
                    holder = f"process {pid}" if pid is not None else "another process"
                    raise CacheLockedError(
                        f"{self.path} is locked by {holder} (PID {pid if pid else '?'}); "
                        f"it held the lock for more than {self.lock_timeout:g} s: close that "
                        "process or use another --db",
                        pid,
                    ) from None
            else:
                try:
                    check_log_was_read(con, self.path)
                except BaseException:
                    con.close()
                    raise
                return con
            time.sleep(min(delay, wait.left()))
            delay = min(delay * 2, _MAX_BACKOFF)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Let every read of this thread inside the block share one read-only connection.

        Opening the file costs about 20 ms of CPU (the open itself, the log check), and one
        command reads several times (the runs, their sums, their samples): a command opens the
        file once instead. The price is the one any reader pays, for longer: while the session
        lasts, no process can write the file (a compute waits, up to its lock timeout, to store
        its next batch), so a session spans one command or one screen's load, never a user's
        pause. Writing inside a session is a bug and raises; sessions nest; other threads keep
        their own short connections (they wait for this one, as for any read).
        """
        key = _session_key(self.path)
        if key in _SESSIONS:
            yield
            return
        # Opened by the first read (so that a command's own checks come first, as without a
        # session) and kept open until the block ends.
        session = _SESSIONS[key] = _Session()
        try:
            with session.stack:
                yield
        finally:
            del _SESSIONS[key]
        for write in session.after:  # the connection is closed: writes may open the file
            write()

    def after_session(self, write: Callable[[], None]) -> bool:
        """Run ``write`` when this thread's session of the file ends (after its connection is
        closed), and say True; False outside a session (the caller writes now)."""
        session = _SESSIONS.get(_session_key(self.path)) if _SESSIONS else None
        if session is None:
            return False
        session.after.append(write)
        return True

    @contextlib.contextmanager
    def connection(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection with the schema checked (and, when writing, created); inside
        a :meth:`session` of this thread, the session's connection."""
        session = _SESSIONS.get(_session_key(self.path)) if _SESSIONS else None
        if session is not None:
            if write:
                raise RuntimeError(f"{self.path}: a write inside a read-only cache session")
            if session.shared is None:
                # Held by the session's stack until it ends; NoFile (nothing stored yet) is
                # raised again by the next read, which may then find the file.
                session.shared = session.stack.enter_context(self._held_connection())
            try:
                yield session.shared
            except duckdb.Error as error:
                raise CacheError(f"{self.path}: {one_line(error)}") from None
            return
        with self._held_connection(write) as con:
            yield con

    @contextlib.contextmanager
    def _held_connection(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A new connection, under the file's in-process lock until it is closed."""
        checkpoint_bytes = wal_checkpoint_size() if write else 0  # a bad value: before opening
        with _file_lock(self.path):
            con = self.open(write)
            try:
                if write:
                    # Checkpoint when the log is big, not at every close (see module docs).
                    con.execute("PRAGMA disable_checkpoint_on_shutdown")
                    con.execute("SET checkpoint_threshold = ?", [f"{checkpoint_bytes}b"])
                if not self.schema_ready:
                    con = self._prepare_schema(con, write)
                yield con
            except duckdb.Error as error:
                raise CacheError(f"{self.path}: {one_line(error)}") from None
            finally:
                con.close()

    def _prepare_schema(
        self, con: duckdb.DuckDBPyConnection, write: bool
    ) -> duckdb.DuckDBPyConnection:
        """Refuse a file that is not ours or is newer; upgrade an older one in place."""
        try:
            version = schema_version(con)
        except SchemaVersionUnreadable as unreadable:
            raise SchemaVersionError(
                f"{self.path}: {unreadable}: run `layerscope doctor --db {self.path}`"
            ) from None
        if version is None:
            raise SchemaVersionError(f"{self.path} is a DuckDB file but not a layerscope cache")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has cache schema version {version}, newer than the {SCHEMA_VERSION} "
                "this layerscope knows: upgrade layerscope or use another --db"
            )
        if version < SCHEMA_VERSION:
            if version == 0 and not write:
                raise NoFile  # an empty file: nothing stored yet
            if not write:  # upgrade needs the file read-write: reopen
                con.close()
                con = self.open(write=True)
                version = schema_version(con) or 0
            apply_migrations(con, version, SCHEMA_VERSION)
            if not write:
                con.close()
                con = self.open(write=False)
        self.schema_ready = True
        return con

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection, or None when the file does not exist (nothing stored)."""
        try:
            with self.connection(write=False) as con:
                yield con
        except NoFile:
            yield None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: all of it is stored, or nothing."""
        with self.connection(write=True) as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def checkpoint(self) -> None:
        """Move the write-ahead log into the main file (readers then open faster)."""
        with self.connection(write=True) as con:
            con.execute("CHECKPOINT")
