"""Finding runs: by full id (writers), by id prefix (users), or all of them.

Why one module: every read and every write starts by turning a run id into the run's row
number, and three places had their own copy of that SQL. Here is the one column list that
becomes a :class:`~layerscope.analysis.base.records.RunInfo`, the one prefix rule users rely on
(``show 3fa9`` works while it is unambiguous), the "unknown run" messages, and the rule that a
run left "running" by a process that no longer exists (as
:func:`~layerscope.analysis.cache.liveness.computing` tells) is reported as "cancelled" and
``interrupted`` (``runs`` shows it so: nobody cancelled it, and the same command resumes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.records import RunInfo
from layerscope.analysis.cache import liveness
from layerscope.analysis.cache.connection import CacheFile, aware, session_memo
from layerscope.analysis.cache.errors import UnknownRunError

__all__ = ["find", "info_by_number", "list_runs", "resolve", "run_no"]

# Columns of the runs table in RunInfo order, plus what the status check needs.
RUN_COLUMNS = (
    "r.run_no, r.id, r.model, r.dataset, r.response_type, r.mode, r.status, r.samples_total, "
    "r.layers, r.projections, r.settings, r.provenance, r.started_at, r.finished_at, "
    "r.owner_pid, r.owner_host, "
    "(SELECT count(*) FROM samples s WHERE s.run_no = r.run_no) AS done, "
    "(SELECT count(*) FROM skipped k WHERE k.run_no = r.run_no AND k.kind = 'skipped') AS skipped, "
    "(SELECT count(*) FROM skipped k WHERE k.run_no = r.run_no AND k.kind = 'failed') AS failed"
)
_BY_NUMBER = f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_no = ?"  # noqa: S608 (constant column list)
_BY_PREFIX = f"SELECT {RUN_COLUMNS} FROM runs r WHERE starts_with(r.id, ?) ORDER BY r.id LIMIT 6"  # noqa: S608 (constant column list)
_ALL = f"SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.started_at NULLS LAST, r.run_no"  # noqa: S608 (constant column list)


def run_from_row(path: Path, row: Sequence[Any]) -> RunInfo:
    """A row of ``RUN_COLUMNS`` from the cache ``path`` as a run."""
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
    owner = int(owner_pid) if owner_pid is not None else None
    interrupted = (
        status == "running"
        and owner is not None
        and liveness.computing(path, run_id, status, owner, owner_host) is False
    )
    if interrupted:
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
        started_at=aware(started_at),
        finished_at=aware(finished_at),
        interrupted=interrupted,
    )


def resolve(con: duckdb.DuckDBPyConnection | None, path: Path, run_id: str) -> tuple[int, RunInfo]:
    """The row number and info of the run with this id or unique id prefix (``con`` None: the
    file ``path`` does not exist yet)."""
    prefix = run_id.strip().lower()
    if not prefix or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise UnknownRunError(f"unknown run {run_id!r}: run ids are hexadecimal")
    if con is None:
        raise UnknownRunError(f"unknown run {run_id!r}: the cache {path} has no runs")
    memo = session_memo(path)
    key = ("run", prefix)
    if memo is not None and key in memo:
        number, info = memo[key]
        return int(number), info
    rows = con.execute(_BY_PREFIX, [prefix]).fetchall()
    if not rows:
        raise UnknownRunError(f"unknown run {run_id!r} (see `layerscope runs`)")
    if len(rows) > 1 and rows[0][1] != prefix:
        shown = ", ".join(r[1][:12] for r in rows[:5])
        raise UnknownRunError(f"run id prefix {run_id!r} is ambiguous: matches {shown}")
    found = int(rows[0][0]), run_from_row(path, rows[0])
    if memo is not None:
        memo[key] = found
    return found


def run_no(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """The internal number of the run with exactly this id (writers know the full id)."""
    row = con.execute("SELECT run_no FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None:
        raise UnknownRunError(f"unknown run {run_id!r}: begin_run was not called")
    return int(row[0])


def info_by_number(con: duckdb.DuckDBPyConnection, path: Path, number: int) -> RunInfo:
    row = con.execute(_BY_NUMBER, [number]).fetchone()
    assert row is not None
    return run_from_row(path, row)


def find(file: CacheFile, run_id: str) -> RunInfo:
    """The run with this id or unique id prefix (:class:`UnknownRunError` otherwise)."""
    with file.reading() as con:
        return resolve(con, file.path, run_id)[1]


def list_runs(file: CacheFile) -> list[RunInfo]:
    """Every run, oldest first."""
    with file.reading() as con:
        if con is None:
            return []
        rows = con.execute(_ALL).fetchall()
    return [run_from_row(file.path, row) for row in rows]


def run_rows(
    file: CacheFile, run_id: str, query: str, parameters: Sequence[object] = ()
) -> tuple[RunInfo, list[tuple[Any, ...]]]:
    """Resolve ``run_id`` and run one read query whose first parameter is its run number."""
    with file.reading() as con:
        number, info = resolve(con, file.path, run_id)
        assert con is not None
        return info, con.execute(query, [number, *parameters]).fetchall()
