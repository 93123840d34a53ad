"""The results cache: every computed statistic in one DuckDB file, never computed twice.

Why DuckDB: the interesting questions ("mean nuclear norm of q by layer over 100,000 samples,
only responses of 50-200 tokens") are GROUP BY queries over tens of millions of rows, which a
columnar engine answers in well under a second, from one file a user can copy between machines.

Concurrency design (why there is no long-lived connection)
------------------------------------------------------------
DuckDB lets either one process open a file read-write or any number open it read-only, never both
at once. Users run ``layerscope compute`` in tmux and look at the results from the TUI or
``layerscope runs``/``show`` in another terminal while it runs. So nobody keeps the file open:

* every operation opens its own short-lived connection and closes it when done: read-only for
  reading, read-write for writing. The compute process holds the file only for the few
  milliseconds of one batch's transaction, not between batches, while the GPU works;
* an open that fails because another process holds a conflicting lock is retried with exponential
  backoff (10 ms doubling to 0.5 s) for up to ``lock_timeout`` seconds (default 30, or
  ``$LAYERSCOPE_LOCK_TIMEOUT``). Only a lock that outlasts that, say an interactive ``duckdb``
  shell left open on the file, becomes a :class:`CacheLockedError` naming the holder's PID as
  DuckDB reports it;
* within one process (the TUI computes in a worker thread while its screens read) all operations
  on one file are serialised by a per-file lock, because DuckDB refuses two connections to the same
  file with different read-only settings in one process;
* readers see every batch as soon as its transaction commits, because each read opens the file
  afresh.

Durability: each batch (its samples, their statistics, spectra and cosines, skipped samples) is
one transaction. A process killed at any moment (Ctrl-C, SIGKILL, OOM) leaves either the whole
batch or none of it: DuckDB's write-ahead log replays only committed transactions. A sample is
never stored twice: the writer skips, inside the transaction, the samples already stored, so even
two processes computing the same run cannot duplicate rows. A run left "running" by a process that
no longer exists (same host) is reported as "cancelled".

Storage: files are created with 16 KiB blocks instead of DuckDB's 256 KiB, because a cache holds
many small tables and small runs (a 500-sample run of a 32-layer model takes about 3-4 MB). Writers
do not checkpoint at every close: the write-ahead log is folded into the main file when it passes
8 MB and when a run finishes. Checkpointing at every batch would rewrite the run's last, partly
filled row group each time, which fragments the file and makes every batch slower; readers pay
only a few milliseconds to replay a log of that size when they open the file.

Where things are: the schema, its versions and migrations in :mod:`cache_schema` (its docstring
documents every table and column); the SQL that inserts a batch and aggregates rows in
:mod:`cache_sql`; this module holds the public API, connections and locking.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.cache_schema import (
    PROJECTIONS,
    SCHEMA_VERSION,
    apply_migrations,
    rebuild_curve_sums_sql,
    schema_version,
)
from layerscope.analysis.cache_sql import (
    add_cosines,
    add_curve_sums,
    insert_columns,
    insert_results,
    insert_skipped,
    loss_sums,
    scanned_sums,
    stored_sums,
)
from layerscope.analysis.errors import one_line
from layerscope.analysis.records import (
    MATRIX_STATISTICS,
    BatchResult,
    Sample,
    SkippedSample,
    TargetInfo,
)

__all__ = [
    "METRICS",
    "SCHEMA_VERSION",
    "CacheError",
    "CacheLockedError",
    "LayerCurve",
    "ResultsCache",
    "RunInfo",
    "SampleRow",
    "SchemaVersionError",
    "UnknownRunError",
    "default_db_path",
    "t_critical_975",
]

RUN_STATUSES = ("running", "complete", "cancelled", "failed")
# What ``curves`` can average: every per-matrix statistic, plus the per-sample loss.
METRICS = (*MATRIX_STATISTICS, "loss")
SAMPLE_SORT_KEYS = ("index", "loss", "prompt_tokens", "response_tokens", *MATRIX_STATISTICS)

DEFAULT_LOCK_TIMEOUT = 30.0
BLOCK_SIZE = int(os.environ.get("LAYERSCOPE_BLOCK_SIZE", 16384))
# Write-ahead log size at which a commit checkpoints into the main file (see module docs).
WAL_CHECKPOINT_SIZE = os.environ.get("LAYERSCOPE_WAL_CHECKPOINT", "8MB")
_FIRST_BACKOFF = 0.01
_MAX_BACKOFF = 0.5
# Samples per read connection in long scans (exports), so a writer is never kept waiting long.
SCAN_CHUNK = 2000


class CacheError(RuntimeError):
    """The cache file cannot be used; the message is one line and names the file."""


class CacheLockedError(CacheError):
    """Another process kept the cache file locked for longer than the lock timeout."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class SchemaVersionError(CacheError):
    """The cache file was written by a newer layerscope (or is not a layerscope cache)."""


class UnknownRunError(CacheError, KeyError):
    """No run (or more than one) matches the given id or id prefix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def default_db_path() -> Path:
    """``$LAYERSCOPE_DB``, else ``$XDG_CACHE_HOME/layerscope/results.duckdb``."""
    env = os.environ.get("LAYERSCOPE_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "layerscope" / "results.duckdb"


@dataclass(frozen=True)
class RunInfo:
    """One run as stored: what was measured, how far it got, and how it was computed."""

    id: str
    model: str
    dataset: str
    response_type: str
    mode: str
    status: str  # running | complete | cancelled | failed
    samples_total: int
    samples_done: int
    samples_skipped: int
    samples_failed: int
    layers: int
    projections: tuple[str, ...]
    settings: dict
    provenance: dict
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def samples_missing(self) -> int:
        return max(0, self.samples_total - self.samples_done - self.samples_skipped)


@dataclass(frozen=True)
class LayerCurve:
    """The mean of one statistic by layer over a run's samples, for one projection.

    ``count[i]`` samples entered layer i's mean; ``excluded_nonfinite`` samples were left out of
    the whole curve because the statistic was NaN or infinite at some layer (as the paper drops
    them). ``ci95`` is the half-width of the 95% t confidence interval of the mean (NaN below
    two samples). For the metric ``loss``, which has no layers, the curve has one point at layer
    0 and projection ``"loss"``.
    """

    run_id: str
    projection: str
    layers: list[int]
    mean: list[float]
    std: list[float]
    ci95: list[float]
    count: list[int]
    excluded_nonfinite: int = 0


@dataclass(frozen=True)
class SampleRow:
    """One measured sample with its per-sample means over layers and projections.

    Token counts are -1 where unknown (runs imported from the paper's files)."""

    index: int
    loss: float
    prompt_tokens: int
    response_tokens: int
    instruction: str
    output: str
    stats: dict[str, float] = field(default_factory=dict)


# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z_975 = 1.959963984540054


def t_critical_975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom.

    A table up to 30, then the Cornish-Fisher expansion around the normal quantile, which is
    accurate to better than 1e-4 there (no scipy needed to browse results).
    """
    if dof < 1:
        return math.nan
    if dof <= len(_T_975):
        return _T_975[dof - 1]
    z = _Z_975
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


# --------------------------------------------------------------------------------------------
# Connections

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


def _is_lock_conflict(error: Exception) -> bool:
    return "Could not set lock on file" in str(error) or "Conflicting lock" in str(error)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class _NoFile(Exception):
    """Reading a cache file that does not exist yet: every read answers "nothing stored"."""


# Columns of the runs table in RunInfo order, plus what the status check needs.
_RUN_COLUMNS = (
    "r.run_no, r.id, r.model, r.dataset, r.response_type, r.mode, r.status, r.samples_total, "
    "r.layers, r.projections, r.settings, r.provenance, r.started_at, r.finished_at, "
    "r.owner_pid, r.owner_host, "
    "(SELECT count(*) FROM samples s WHERE s.run_no = r.run_no) AS done, "
    "(SELECT count(*) FROM skipped k WHERE k.run_no = r.run_no AND k.kind = 'skipped') AS skipped, "
    "(SELECT count(*) FROM skipped k WHERE k.run_no = r.run_no AND k.kind = 'failed') AS failed"
)


class ResultsCache:
    """The results of every run, in one DuckDB file shared safely between processes.

    Holds no connection between calls (see the module documentation), so it is cheap to create,
    safe to keep around in a UI, and usable as a context manager for symmetry. Reading never
    creates the file: a cache that does not exist yet simply has no runs.
    """

    def __init__(self, path: Path | str | None = None, *, lock_timeout: float | None = None):
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        if lock_timeout is None:
            lock_timeout = float(os.environ.get("LAYERSCOPE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
        self.lock_timeout = lock_timeout
        self._schema_ready = False

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"ResultsCache({str(self.path)!r})"

    # ---- connections ------------------------------------------------------------------------

    def _open(self, write: bool) -> duckdb.DuckDBPyConnection:
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CacheError(f"{self.path}: cannot create its folder: {error}") from None
        deadline = time.monotonic() + self.lock_timeout
        delay = _FIRST_BACKOFF
        while True:
            if not write and not self.path.exists():
                raise _NoFile
            try:
                if write and not self.path.exists():
                    # Small blocks keep small runs small (the default 256 KiB block would be
                    # mostly empty for a table of a few hundred rows).
                    config: dict[str, Any] = {"default_block_size": str(BLOCK_SIZE)}
                    return duckdb.connect(str(self.path), config=config)
                return duckdb.connect(str(self.path), read_only=not write)
            except duckdb.Error as error:
                if not _is_lock_conflict(error):
                    raise CacheError(f"{self.path}: {one_line(error)}") from None
                if time.monotonic() >= deadline:
                    match = _PID_PATTERN.search(str(error))
                    pid = int(match.group(1)) if match else None
                    holder = f"process {pid}" if pid is not None else "another process"
                    raise CacheLockedError(
                        f"{self.path} is locked by {holder} (PID {pid if pid else '?'}); "
                        f"it held the lock for more than {self.lock_timeout:g} s: close that "
                        "process or use another --db",
                        pid,
                    ) from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _MAX_BACKOFF)

    @contextlib.contextmanager
    def _connection(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection with the schema checked (and, when writing, created)."""
        with _file_lock(self.path):
            con = self._open(write)
            try:
                if write:
                    # Checkpoint when the log is big, not at every close (see module docs).
                    con.execute("PRAGMA disable_checkpoint_on_shutdown")
                    con.execute("SET checkpoint_threshold = ?", [WAL_CHECKPOINT_SIZE])
                if not self._schema_ready:
                    con = self._prepare_schema(con, write)
                yield con
            except duckdb.Error as error:
                raise CacheError(f"{self.path}: {one_line(error)}") from None
            finally:
                con.close()

    def _prepare_schema(
        self, con: duckdb.DuckDBPyConnection, write: bool
    ) -> duckdb.DuckDBPyConnection:
        version = schema_version(con)
        if version is None:
            raise SchemaVersionError(f"{self.path} is a DuckDB file but not a layerscope cache")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has cache schema version {version}, newer than the {SCHEMA_VERSION} "
                "this layerscope knows: upgrade layerscope or use another --db"
            )
        if version < SCHEMA_VERSION:
            if version == 0 and not write:
                raise _NoFile  # an empty file: nothing stored yet
            if not write:  # upgrade needs the file read-write: reopen
                con.close()
                con = self._open(write=True)
                version = schema_version(con) or 0
            apply_migrations(con, version, SCHEMA_VERSION)
            if not write:
                con.close()
                con = self._open(write=False)
        self._schema_ready = True
        return con

    @contextlib.contextmanager
    def _reading(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection, or None when the file does not exist (nothing stored)."""
        try:
            with self._connection(write=False) as con:
                yield con
        except _NoFile:
            yield None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: all of it is stored, or nothing."""
        with self._connection(write=True) as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def rebuild_summaries(self) -> None:
        """Recompute every run's per-layer sums from its statistics rows (after bulk loads
        that bypass ``write_batch``)."""
        with self._transaction() as con:
            con.execute("DELETE FROM curve_sums")
            for name in MATRIX_STATISTICS:
                con.execute(rebuild_curve_sums_sql(name))

    def checkpoint(self) -> None:
        """Move the write-ahead log into the main file (readers then open faster)."""
        with self._connection(write=True) as con:
            con.execute("CHECKPOINT")

    def upgrade(self) -> int:
        """Create or upgrade the file's schema now; returns the schema version."""
        with self._connection(write=True):
            pass
        return SCHEMA_VERSION

    # ---- run lookup -------------------------------------------------------------------------

    def _run_from_row(self, row: Sequence[Any]) -> RunInfo:
        (
            _run_no,
            run_id,
            model,
            dataset,
            response_type,
            mode,
            status,
            samples_total,
            layers,
            projections,
            settings,
            provenance,
            started_at,
            finished_at,
            owner_pid,
            owner_host,
            done,
            skipped,
            failed,
        ) = row
        if (
            status == "running"
            and owner_pid is not None
            and owner_host == socket.gethostname()
            and owner_pid != os.getpid()
            and not _pid_alive(int(owner_pid))
        ):
            status = "cancelled"  # its process is gone (killed): resumable
        return RunInfo(
            id=run_id,
            model=model,
            dataset=dataset,
            response_type=response_type,
            mode=mode,
            status=status,
            samples_total=int(samples_total),
            samples_done=int(done),
            samples_skipped=int(skipped),
            samples_failed=int(failed),
            layers=int(layers),
            projections=tuple(projections or ()),
            settings=json.loads(settings),
            provenance=json.loads(provenance),
            started_at=_aware(started_at),
            finished_at=_aware(finished_at),
        )

    def _run_rows(
        self, run_id: str, query: str, parameters: Sequence[object] = ()
    ) -> tuple[RunInfo, list[tuple[Any, ...]]]:
        """Resolve ``run_id`` and run one read query whose first parameter is its run number."""
        with self._reading() as con:
            run_no, info = self._resolve(con, run_id)
            assert con is not None
            return info, con.execute(query, [run_no, *parameters]).fetchall()

    def _resolve(self, con: duckdb.DuckDBPyConnection | None, run_id: str) -> tuple[int, RunInfo]:
        prefix = run_id.strip().lower()
        if not prefix or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise UnknownRunError(f"unknown run {run_id!r}: run ids are hexadecimal")
        if con is None:
            raise UnknownRunError(f"unknown run {run_id!r}: the cache {self.path} has no runs")
        rows = con.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r WHERE starts_with(r.id, ?) ORDER BY r.id LIMIT 6",  # noqa: S608 (constant column list)
            [prefix],
        ).fetchall()
        if not rows:
            raise UnknownRunError(f"unknown run {run_id!r} (see `layerscope runs`)")
        if len(rows) > 1 and rows[0][1] != prefix:
            shown = ", ".join(r[1][:12] for r in rows[:5])
            raise UnknownRunError(f"run id prefix {run_id!r} is ambiguous: matches {shown}")
        return int(rows[0][0]), self._run_from_row(rows[0])

    def _run_no(self, con: duckdb.DuckDBPyConnection, run_id: str) -> int:
        """The internal number of the run with exactly this id (writers know the full id)."""
        row = con.execute("SELECT run_no FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise UnknownRunError(f"unknown run {run_id!r}: begin_run was not called")
        return int(row[0])

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self._reading() as con:
            if con is None:
                return []
            rows = con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs r ORDER BY r.started_at NULLS LAST, r.run_no"  # noqa: S608 (constant column list)
            ).fetchall()
        return [self._run_from_row(row) for row in rows]

    def run(self, run_id: str) -> RunInfo:
        """The run with this id or unique id prefix (:class:`UnknownRunError` otherwise)."""
        with self._reading() as con:
            return self._resolve(con, run_id)[1]

    def find_run(self, run_id: str) -> RunInfo | None:
        """The run with exactly this id, or None."""
        try:
            info = self.run(run_id)
        except UnknownRunError:
            return None
        return info if info.id == run_id else None

    def targets(self, run_id: str) -> list[TargetInfo]:
        """The run's measured matrices with the model's parameter names."""
        _info, rows = self._run_rows(
            run_id,
            "SELECT layer, projection::VARCHAR, parameter, rows, cols FROM targets "
            "WHERE run_no = ? ORDER BY layer, projection",
        )
        return [TargetInfo(int(a), b, c, int(d), int(e)) for a, b, c, d, e in rows]

    # ---- aggregation ------------------------------------------------------------------------

    def curves(
        self,
        run_ids: Sequence[str],
        metric: str,
        projections: Sequence[str] | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> list[LayerCurve]:
        """Mean, std, 95% CI and count of ``metric`` by layer, per run and projection.

        Samples whose statistic is not finite at any layer are left out of that projection's
        curve and counted in ``excluded_nonfinite``. ``response_tokens`` (inclusive) restricts
        the samples by response length. Curves come in the order of ``run_ids``, then
        projections in q, k, v, o, gate, up, down order.
        """
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        wanted = tuple(projections) if projections else None
        if wanted:
            unknown = [p for p in wanted if p not in PROJECTIONS]
            if unknown:
                raise ValueError(
                    f"unknown projection {unknown[0]!r}; choose from {', '.join(PROJECTIONS)}"
                )
        low, high = _token_range(response_tokens) if response_tokens else (None, None)
        curves: list[LayerCurve] = []
        with self._reading() as con:
            for run_id in run_ids:
                run_no, info = self._resolve(con, run_id)
                assert con is not None
                if metric == "loss":
                    count, total, squares, excluded = loss_sums(con, run_no, low, high)
                    sums = {0: (count, total, squares)}
                    curves.append(_curve_from_sums(info.id, "loss", sums, excluded))
                    continue
                if response_tokens is None:
                    by_projection, nonfinite = stored_sums(con, run_no, metric)
                else:
                    by_projection, nonfinite = scanned_sums(con, run_no, metric, low, high)
                curves.extend(
                    _curve_from_sums(info.id, p, by_projection[p], nonfinite.get(p, 0))
                    for p in PROJECTIONS
                    if p in by_projection and (not wanted or p in wanted)
                )
        return curves

    def samples(
        self,
        run_id: str,
        sort_by: str = "loss",
        descending: bool = True,
        limit: int | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> list[SampleRow]:
        """The run's samples with per-sample means (over layers and projections) of each
        statistic, sorted by ``sort_by`` (index, loss, token counts or a statistic); NaN last."""
        if sort_by not in SAMPLE_SORT_KEYS:
            raise ValueError(
                f"cannot sort by {sort_by!r}; choose one of {', '.join(SAMPLE_SORT_KEYS)}"
            )
        low, high = _token_range(response_tokens)
        means = ", ".join(f'avg(t."{s}") AS "{s}"' for s in MATRIX_STATISTICS)
        stat_columns = ", ".join(f'm."{s}"' for s in MATRIX_STATISTICS)
        if sort_by in MATRIX_STATISTICS or sort_by == "loss":
            # NaN sorts above every number in DuckDB: send it after the numbers, with NULLs
            order = f'(CASE WHEN isnan("{sort_by}") THEN NULL ELSE "{sort_by}" END)'
        else:
            order = "sample_index" if sort_by == "index" else f'"{sort_by}"'
        direction = "DESC" if descending else "ASC"
        query = f"""
            WITH m AS (
                SELECT t.sample_index, {means} FROM statistics t WHERE t.run_no = $run
                GROUP BY t.sample_index
            )
            SELECT s.sample_index, s.loss, s.prompt_tokens, s.response_tokens, s.instruction,
                   s.output, {stat_columns}
            FROM samples s LEFT JOIN m USING (sample_index)
            WHERE s.run_no = $run
              AND ($all_lengths OR s.response_tokens BETWEEN $low AND $high)
            ORDER BY {order} {direction} NULLS LAST,
                     sample_index
            LIMIT $limit
        """  # noqa: S608 (identifiers from MATRIX_STATISTICS, values are parameters)
        with self._reading() as con:
            run_no, _info = self._resolve(con, run_id)
            assert con is not None
            rows = con.execute(
                query,
                {
                    "run": run_no,
                    "all_lengths": response_tokens is None,
                    "low": low,
                    "high": high,
                    "limit": limit if limit else 2**62,
                },
            ).fetchall()
        result = []
        for row in rows:
            stats = {
                name: _float(value) for name, value in zip(MATRIX_STATISTICS, row[6:], strict=True)
            }
            result.append(
                SampleRow(
                    index=int(row[0]),
                    loss=_float(row[1]),
                    prompt_tokens=_count(row[2]),
                    response_tokens=_count(row[3]),
                    instruction=row[4] or "",
                    output=row[5] or "",
                    stats=stats,
                )
            )
        return result

    def sample_curve(self, run_id: str, index: int, metric: str, projection: str) -> list[float]:
        """One sample's statistic by layer for one projection (NaN where not stored)."""
        if metric not in MATRIX_STATISTICS:
            raise ValueError(
                f"unknown statistic {metric!r}; choose one of {', '.join(MATRIX_STATISTICS)}"
            )
        query = (
            f'SELECT layer, "{metric}" FROM statistics '  # noqa: S608 (metric checked above)
            "WHERE run_no = ? AND sample_index = ? AND projection = ? ORDER BY layer"
        )
        info, rows = self._run_rows(run_id, query, [index, projection])
        if projection not in info.projections:
            raise ValueError(f"run {info.short_id} has no projection {projection!r}")
        values = [math.nan] * info.layers
        for layer, value in rows:
            if 0 <= layer < len(values):
                values[layer] = _float(value)
        return values

    def sample_spectra(self, run_id: str, index: int, projection: str) -> list[list[float]]:
        """One sample's singular values by layer (empty lists when spectra were not kept)."""
        info, rows = self._run_rows(
            run_id,
            "SELECT layer, singular_values FROM spectra "
            "WHERE run_no = ? AND sample_index = ? AND projection = ? ORDER BY layer",
            [index, projection],
        )
        spectra: list[list[float]] = [[] for _ in range(info.layers)]
        for layer, values in rows:
            if 0 <= layer < len(spectra):
                spectra[layer] = [float(v) for v in values]
        return spectra

    def _cosine_sums(self, run_id: str, kind: str, name: str) -> tuple[int, list, list] | None:
        _info, rows = self._run_rows(
            run_id,
            "SELECT size, totals, counts FROM cosine_sums "
            "WHERE run_no = ? AND kind = ? AND name = ?",
            [kind, name],
        )
        return (int(rows[0][0]), list(rows[0][1]), list(rows[0][2])) if rows else None

    def layer_cosines(self, run_id: str, projection: str) -> list[list[float]]:
        """Mean over samples of the L x L cosine similarity between layers' gradients
        (empty when the run has none for this projection; NaN in cells no sample had)."""
        sums = self._cosine_sums(run_id, "layers", projection)
        if sums is None:
            return []
        size, totals, counts = sums
        means = [t / c if c else math.nan for t, c in zip(totals, counts, strict=True)]
        return [means[i * size : (i + 1) * size] for i in range(size)]

    def pair_cosines(self, run_id: str, pair: str) -> list[float]:
        """Mean over samples of the per-layer cosine between two projections' gradients
        (pair "q-o" or "k-v"; empty when not measured)."""
        sums = self._cosine_sums(run_id, "pair", pair)
        if sums is None:
            return []
        _size, totals, counts = sums
        return [t / c if c else math.nan for t, c in zip(totals, counts, strict=True)]

    def skipped(self, run_id: str) -> list[SkippedSample]:
        """Samples that were not measured (skipped or failed), with their reasons."""
        _info, rows = self._run_rows(
            run_id,
            "SELECT sample_index, kind, reason FROM skipped WHERE run_no = ? ORDER BY sample_index",
        )
        return [
            SkippedSample(int(i), reason if kind == "skipped" else f"failed: {reason}")
            for i, kind, reason in rows
        ]

    def iter_sample_statistics(
        self, run_id: str
    ) -> Iterator[
        tuple[dict[str, Any], list[tuple[int, str, dict[str, float], list[float] | None]]]
    ]:
        """Every stored sample in index order with its matrices, for exports.

        Yields ``(sample, matrices)``: the sample's row as a dict (index, loss, prompt_tokens,
        response_tokens, instruction, input, output) and a list of ``(layer, projection,
        statistics, spectrum or None)``. Reads in chunks of samples, one short connection each.
        """
        stat_columns = ", ".join(f't."{s}"' for s in MATRIX_STATISTICS)
        stats_query = f"""
            SELECT t.sample_index, t.layer, t.projection::VARCHAR, {stat_columns},
                   sp.singular_values
            FROM statistics t LEFT JOIN spectra sp
              ON sp.run_no = t.run_no AND sp.sample_index = t.sample_index
             AND sp.layer = t.layer AND sp.projection = t.projection
            WHERE t.run_no = $run AND t.sample_index BETWEEN $first AND $last
            ORDER BY t.sample_index, t.layer, t.projection
        """  # noqa: S608 (identifiers from MATRIX_STATISTICS)
        after = -1
        while True:
            with self._reading() as con:
                run_no, _info = self._resolve(con, run_id)
                assert con is not None
                samples = con.execute(
                    "SELECT sample_index, loss, prompt_tokens, response_tokens, instruction, "
                    "input, output FROM samples WHERE run_no = ? AND sample_index > ? "
                    "ORDER BY sample_index LIMIT ?",
                    [run_no, after, SCAN_CHUNK],
                ).fetchall()
                if not samples:
                    return
                first, last = samples[0][0], samples[-1][0]
                rows = con.execute(
                    stats_query, {"run": run_no, "first": first, "last": last}
                ).fetchall()
            by_sample: dict[int, list[tuple[int, str, dict[str, float], list[float] | None]]] = {}
            for row in rows:
                values = dict(zip(MATRIX_STATISTICS, row[3:-1], strict=True))
                stats = {k: float(v) for k, v in values.items() if v is not None}
                spectrum = [float(v) for v in row[-1]] if row[-1] is not None else None
                by_sample.setdefault(int(row[0]), []).append((int(row[1]), row[2], stats, spectrum))
            for index, loss, prompt, response, instruction, input_text, output in samples:
                sample = {
                    "index": int(index),
                    "loss": _float(loss),
                    "prompt_tokens": _count(prompt),
                    "response_tokens": _count(response),
                    "instruction": instruction or "",
                    "input": input_text or "",
                    "output": output or "",
                }
                yield sample, by_sample.get(int(index), [])
            after = samples[-1][0]

    def export_table(self, run_id: str, path: Path | str, file_format: str) -> int:
        """Write the run's statistics, one row per sample and matrix, as Parquet or CSV.

        Columns: sample_index, loss, prompt_tokens, response_tokens, layer, projection,
        parameter and one per statistic. Returns the number of rows written. The file is first
        written in a private temporary folder and then moved into place, so a failed export never
        leaves half a file (and no user-supplied text is ever spliced into SQL).
        """
        if file_format not in ("parquet", "csv"):
            raise ValueError(f"unknown table format {file_format!r}: parquet or csv")
        target = Path(path).expanduser()
        if target.parent and not target.parent.exists():
            raise CacheError(f"{target}: folder {target.parent} does not exist")
        stat_columns = ", ".join(f't."{s}"' for s in MATRIX_STATISTICS)
        option = "FORMAT parquet" if file_format == "parquet" else "FORMAT csv, HEADER true"
        scratch = Path(tempfile.mkdtemp(prefix="layerscope-export-"))
        temporary = scratch / f"export.{file_format}"
        try:
            with self._reading() as con:
                run_no, _info = self._resolve(con, run_id)
                assert con is not None
                # COPY takes no prepared parameters, so the target is a name this function made
                # in the system temp folder (never user text) and the run number an int from the
                # database; the finished file is then moved into place.
                copy = f"""
                    COPY (
                        SELECT t.sample_index, s.loss, s.prompt_tokens, s.response_tokens,
                               t.layer, t.projection::VARCHAR AS projection, g.parameter,
                               {stat_columns}
                        FROM statistics t
                        JOIN samples s ON s.run_no = t.run_no AND s.sample_index = t.sample_index
                        LEFT JOIN targets g ON g.run_no = t.run_no AND g.layer = t.layer
                                           AND g.projection = t.projection
                        WHERE t.run_no = {int(run_no)}
                        ORDER BY t.sample_index, t.layer, t.projection
                    ) TO '{_sql_path(temporary)}' ({option})
                """  # noqa: S608 (see comment above)
                con.execute(copy)
                count = con.execute(
                    "SELECT count(*) FROM statistics WHERE run_no = ?", [run_no]
                ).fetchone()
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(temporary, partial)
            os.replace(partial, target)
        except OSError as error:
            raise CacheError(f"{target}: {error.strerror or error}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return int(count[0]) if count else 0

    # ---- writing ----------------------------------------------------------------------------

    def begin_run(
        self,
        run_id: str,
        *,
        model: str,
        dataset: str,
        response_type: str,
        mode: str,
        samples_total: int,
        targets: Sequence[TargetInfo],
        settings: Mapping[str, Any],
        provenance: Mapping[str, Any],
    ) -> RunInfo:
        """Create the run, or reopen an existing one for more samples, and mark it running.

        ``provenance`` describes this compute session (versions, device, batch size, ...); it is
        stored as the run's current provenance and appended to its ``sessions`` history. Refuses
        a run that a live process on this host is computing right now.
        """
        if not re.fullmatch(r"[0-9a-f]{16,}", run_id):
            raise ValueError(f"run id must be a hexadecimal content hash, got {run_id!r}")
        now = _now()
        session = {**provenance, "started_at": now.isoformat() + "Z", "pid": os.getpid()}
        host = socket.gethostname()
        layers = 1 + max((t.layer for t in targets), default=-1)
        projections = [p for p in PROJECTIONS if any(t.projection == p for t in targets)]
        with self._transaction() as con:
            row = con.execute(
                "SELECT run_no, status, owner_pid, owner_host, provenance FROM runs WHERE id = ?",
                [run_id],
            ).fetchone()
            if row is None:
                next_no = con.execute("SELECT coalesce(max(run_no), 0) + 1 FROM runs").fetchone()
                run_no = int(next_no[0]) if next_no else 1
                stored_provenance = {**session, "sessions": [session]}
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    [
                        run_no,
                        run_id,
                        model,
                        dataset,
                        response_type,
                        mode,
                        samples_total,
                        layers,
                        projections,
                        json.dumps(dict(settings), sort_keys=True, default=str),
                        json.dumps(stored_provenance, sort_keys=True, default=str),
                        now,
                        os.getpid(),
                        host,
                    ],
                )
                if targets:
                    insert_columns(
                        con,
                        "targets",
                        {
                            "run_no": ("INTEGER", [run_no] * len(targets)),
                            "layer": ("SMALLINT", [t.layer for t in targets]),
                            "projection": ("projection_name", [t.projection for t in targets]),
                            "parameter": ("VARCHAR", [t.parameter for t in targets]),
                            "rows": ("INTEGER", [t.rows for t in targets]),
                            "cols": ("INTEGER", [t.cols for t in targets]),
                        },
                    )
            else:
                run_no, status, owner_pid, owner_host, old_provenance = row
                if (
                    status == "running"
                    and owner_pid is not None
                    and owner_pid != os.getpid()
                    and owner_host == host
                    and _pid_alive(int(owner_pid))
                ):
                    raise CacheError(
                        f"run {run_id[:12]} is being computed by PID {owner_pid} right now; "
                        "wait for it or stop it first"
                    )
                history = json.loads(old_provenance).get("sessions", [])
                stored_provenance = {**session, "sessions": [*history, session]}
                con.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, samples_total = ?, "
                    "provenance = ?, owner_pid = ?, owner_host = ?, "
                    "started_at = coalesce(started_at, ?) WHERE run_no = ?",
                    [
                        samples_total,
                        json.dumps(stored_provenance, sort_keys=True, default=str),
                        os.getpid(),
                        host,
                        now,
                        run_no,
                    ],
                )
            info_row = con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_no = ?",  # noqa: S608 (constant column list)
                [run_no],
            ).fetchone()
        assert info_row is not None
        return self._run_from_row(info_row)

    def done_indices(self, run_id: str) -> set[int]:
        """Indices that need no computing: stored samples and deliberately skipped ones
        (failed samples are retried). Empty for a run that does not exist yet."""
        with self._reading() as con:
            if con is None:
                return set()
            rows = con.execute(
                "SELECT s.sample_index FROM samples s JOIN runs r USING (run_no) WHERE r.id = ? "
                "UNION ALL SELECT k.sample_index FROM skipped k JOIN runs r USING (run_no) "
                "WHERE r.id = ? AND k.kind = 'skipped'",
                [run_id, run_id],
            ).fetchall()
        return {int(r[0]) for r in rows}

    def write_batch(
        self,
        run_id: str,
        batch: BatchResult,
        samples_by_index: Mapping[int, Sample],
        failed: Sequence[SkippedSample] = (),
    ) -> int:
        """Store one batch in one transaction; returns how many samples were new.

        Samples already stored (for instance by another process computing the same run) are
        left alone, so no sample is ever stored twice. ``failed`` records samples whose
        computation raised; a sample that is stored later replaces its failure record.
        """
        with self._transaction() as con:
            run_no = self._run_no(con, run_id)
            incoming = [r.index for r in batch.results] + [s.index for s in batch.skipped]
            existing = {
                int(r[0])
                for r in con.execute(
                    "SELECT sample_index FROM samples WHERE run_no = ? AND "
                    "list_contains(?, sample_index) UNION ALL SELECT sample_index FROM skipped "
                    "WHERE run_no = ? AND kind = 'skipped' AND list_contains(?, sample_index)",
                    [run_no, incoming, run_no, incoming],
                ).fetchall()
            }
            results = [r for r in batch.results if r.index not in existing]
            skipped = [s for s in batch.skipped if s.index not in existing]
            fresh = {r.index for r in results} | {s.index for s in skipped}
            if fresh:
                con.execute(
                    "DELETE FROM skipped WHERE run_no = ? AND kind = 'failed' "
                    "AND list_contains(?, sample_index)",
                    [run_no, sorted(fresh)],
                )
            insert_results(con, run_no, results, samples_by_index)
            insert_skipped(con, run_no, [(s.index, "skipped", s.reason) for s in skipped])
            failures = [f for f in failed if f.index not in existing and f.index not in fresh]
            if failures:
                con.execute(
                    "DELETE FROM skipped WHERE run_no = ? AND list_contains(?, sample_index)",
                    [run_no, [f.index for f in failures]],
                )
                insert_skipped(con, run_no, [(f.index, "failed", f.reason) for f in failures])
            add_curve_sums(con, run_no, results)
            add_cosines(con, run_no, results)
        return len(results) + len(skipped)

    def finish_run(self, run_id: str, status: str, message: str = "") -> RunInfo:
        """Mark the run complete, cancelled or failed and close its current session."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        now = _now()
        with self._transaction() as con:
            run_no, _info = self._resolve(con, run_id)
            row = con.execute("SELECT provenance FROM runs WHERE run_no = ?", [run_no]).fetchone()
            provenance = json.loads(row[0]) if row else {}
            counts = con.execute(
                "SELECT (SELECT count(*) FROM samples WHERE run_no = $r), "
                "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'skipped'), "
                "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'failed')",
                {"r": run_no},
            ).fetchone()
            closing: dict[str, Any] = {"finished_at": now.isoformat() + "Z", "status": status}
            if counts:
                closing["samples_done"], closing["samples_skipped"], closing["samples_failed"] = (
                    int(c) for c in counts
                )
            if message:
                closing["message"] = message
            provenance.update(closing)
            sessions = provenance.get("sessions") or []
            if sessions:
                sessions[-1] = {**sessions[-1], **closing}
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, provenance = ?, owner_pid = NULL "
                "WHERE run_no = ?",
                [status, now, json.dumps(provenance, sort_keys=True, default=str), run_no],
            )
            info_row = con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.run_no = ?",  # noqa: S608 (constant column list)
                [run_no],
            ).fetchone()
        self.checkpoint()  # a finished run leaves no log for readers to replay
        assert info_row is not None
        return self._run_from_row(info_row)

    def delete_run(self, run_id: str) -> RunInfo:
        """Remove a run and everything stored for it."""
        with self._transaction() as con:
            run_no, info = self._resolve(con, run_id)
            for table in (
                "statistics",
                "samples",
                "skipped",
                "targets",
                "spectra",
                "cosine_sums",
                "curve_sums",
                "runs",
            ):
                con.execute(f"DELETE FROM {table} WHERE run_no = ?", [run_no])  # noqa: S608 (constant table names)
        return info


# --------------------------------------------------------------------------------------------
# Helpers


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _count(value: Any) -> int:
    """Token counts as returned: -1 when unknown."""
    return -1 if value is None else int(value)


def _token_range(response_tokens: tuple[int, int] | None) -> tuple[int, int]:
    if response_tokens is None:
        return (-(2**31), 2**31 - 1)
    low, high = response_tokens
    if low > high:
        raise ValueError(f"response token range {low}-{high} is empty")
    return int(low), int(high)


def _curve_from_sums(
    run_id: str,
    projection: str,
    sums: Mapping[int, tuple[int, float, float]],
    excluded: int,
) -> LayerCurve:
    """A curve from per-layer (count, sum, sum of squares) of the values it averages."""
    layers, means, stds, cis, counts = [], [], [], [], []
    for layer in sorted(sums):
        count, total, squares = sums[layer]
        mean = total / count if count else math.nan
        if count >= 2:
            variance = max(0.0, (squares - total * total / count) / (count - 1))
            std = math.sqrt(variance)
            ci = t_critical_975(count - 1) * std / math.sqrt(count)
        else:
            std = ci = math.nan
        layers.append(int(layer))
        counts.append(int(count))
        means.append(mean)
        stds.append(std)
        cis.append(ci)
    return LayerCurve(run_id, projection, layers, means, stds, cis, counts, excluded)


def _sql_path(path: Path) -> str:
    """A file name for COPY ... TO; only names made by ``tempfile`` reach here."""
    text = str(path)
    if "'" in text:
        raise CacheError(f"{path}: export folder names must not contain a single quote")
    return text
