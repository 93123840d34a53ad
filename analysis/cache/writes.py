"""Writing a run: begin it, store its batches, finish it; or all three at once.

Why these together: they are the whole of a run's life in the file and share its rules.
A run is created or reopened (never computed by two live processes at once: the process that
begins it holds its lock until it is finished, :mod:`.liveness`), each batch is one
transaction, so a process killed at any moment (Ctrl-C, SIGKILL, OOM) leaves either the whole
batch or none of it: DuckDB's write-ahead log replays only committed transactions. A
sample is never stored twice: the writer skips, inside the transaction, the samples already
stored, so even two processes computing the same run cannot duplicate rows. Finishing records
the session's counts and outcome in the run's provenance and checkpoints, so readers of a
finished run replay no log. Each session records what the run held when it began
(``handled_at_start``), so that a reader can tell how fast a live run grows. The runner does not call these directly but goes through
:class:`layerscope.analysis.runs.lifecycle.StoredRun`, which guarantees the finish. A disk that
refuses a write (full, over quota, read-only, failing) is raised as ``StorageError``, naming the
cache file's folder: nothing more can be stored, and a writer must stop rather than retry.

Why each step is a function of an open connection (``_begin``, :func:`store_batch`,
``_finish``) with the public functions as thin transactions around it: :func:`store_complete_run`
runs all three in ONE transaction, for the paper-format import (and a merge stores the samples
it copies with :func:`store_batch` on its own transaction, :mod:`.merging`). A computed run is
worth keeping batch by batch (hours of GPU time; a resumed run continues where it stopped), but
an imported file is one thing: half of it stored is a run the user never asked for, so a failure
anywhere in it (a malformed line, DuckDB refusing a value, Ctrl-C, SIGKILL) must leave no run at
all. The price is that the file stays opened read-write for the whole import, so other
processes' reads wait for it (up to their lock timeout); the import validates the whole file
before it opens the cache, so what is left inside the transaction is re-reading and inserting.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.records import (
    PROJECTIONS,
    RUN_STATUSES,
    BatchResult,
    RunHeader,
    RunInfo,
    Sample,
    SkippedSample,
)
from layerscope.analysis.cache import liveness, runs
from layerscope.analysis.cache.connection import CacheFile, now
from layerscope.analysis.cache.errors import CacheError, refused_storage, storage_errno
from layerscope.analysis.cache.inserts import (
    add_cosines,
    add_curve_sums,
    insert_columns,
    insert_results,
    insert_skipped,
)

__all__ = [
    "begin_run",
    "complete_stored_run",
    "finish_run",
    "fold_log",
    "store_batch",
    "store_complete_run",
    "write_batch",
]

_RUN_ID = re.compile(r"[0-9a-f]{16,}")


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, default=str)


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id must be a hexadecimal content hash, got {run_id!r}")


def _begin(
    con: duckdb.DuckDBPyConnection, header: RunHeader, path: Path, claimed: bool | None
) -> int:
    """Create or reopen the run on an open transaction; returns its row number. ``claimed``:
    what :func:`~layerscope.analysis.cache.liveness.claim_run` answered for this process
    (False: another live process computes the run; None: no locks here, the stored PID
    decides)."""
    run_id, model, dataset = header.run_id, header.model, header.dataset
    response_type, mode, samples_total = header.response_type, header.mode, header.samples_total
    targets, settings, provenance = header.targets, header.settings, header.provenance
    started = now()
    session = {**provenance, "started_at": started.isoformat() + "Z", "pid": os.getpid()}
    host = socket.gethostname()
    layers = 1 + max((t.layer for t in targets), default=-1)
    projections = [p for p in PROJECTIONS if any(t.projection == p for t in targets)]
    row = con.execute(
        "SELECT run_no, status, owner_pid, owner_host, provenance FROM runs WHERE id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        next_no = con.execute("SELECT coalesce(max(run_no), 0) + 1 FROM runs").fetchone()
        run_no = int(next_no[0]) if next_no else 1
        session["handled_at_start"] = 0
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
                _json(settings),
                _json(stored_provenance),
                started,
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
        return run_no
    run_no, status, owner_pid, owner_host, old_provenance = row
    live_elsewhere = claimed is False or (
        claimed is None
        and owner_pid is not None
        and owner_pid != os.getpid()
        and liveness.computing(path, run_id, status, int(owner_pid), owner_host) is True
    )
    if live_elsewhere:
        who = f"PID {owner_pid}" if owner_pid is not None else "another process"
        raise CacheError(
            f"run {run_id[:12]} is being computed by {who} right now; wait for it or stop it first"
        )
    # What this session starts from, so that a reader can tell its pace (analysis/runs/pace.py).
    held = con.execute(
        "SELECT (SELECT count(*) FROM samples WHERE run_no = $r) + "
        "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'skipped')",
        {"r": run_no},
    ).fetchone()
    session["handled_at_start"] = int(held[0]) if held else 0
    history = json.loads(old_provenance).get("sessions", [])
    stored_provenance = {**session, "sessions": [*history, session]}
    con.execute(
        "UPDATE runs SET status = 'running', finished_at = NULL, samples_total = ?, "
        "provenance = ?, owner_pid = ?, owner_host = ?, "
        "started_at = coalesce(started_at, ?) WHERE run_no = ?",
        [samples_total, _json(stored_provenance), os.getpid(), host, started, run_no],
    )
    return int(run_no)


def begin_run(file: CacheFile, header: RunHeader) -> RunInfo:
    """Create the run, or reopen it for more samples, and mark it running (see
    ``ResultsCache.begin_run``)."""
    _check_run_id(header.run_id)
    # claimed once the file is known to be a cache (no lock file beside anything else)
    with (
        refused_storage(file.path),
        file.transaction() as con,
        _claimed(file, header.run_id) as claimed,
    ):
        run_no = _begin(con, header, file.path, claimed)
        return runs.info_by_number(con, file.path, run_no)


@contextlib.contextmanager
def _claimed(file: CacheFile, run_id: str) -> Iterator[bool | None]:
    """Claim the run for this process (liveness.py), and let go of it again if the block fails:
    yields the claim's answer (see :func:`_begin`); the claim is kept when the block ends
    normally (the run is computed now) until :func:`finish_run`."""
    answer = liveness.claim_run(file.path, run_id)
    try:
        yield answer
    except BaseException:
        if answer:
            liveness.release_run(file.path, run_id)
        raise


def store_batch(
    con: duckdb.DuckDBPyConnection,
    run_no: int,
    batch: BatchResult,
    samples_by_index: Mapping[int, Sample],
    failed: Sequence[SkippedSample] = (),
) -> int:
    """Store one batch on an open transaction; returns how many samples were new."""
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


def write_batch(
    file: CacheFile,
    run_id: str,
    batch: BatchResult,
    samples_by_index: Mapping[int, Sample],
    failed: Sequence[SkippedSample] = (),
) -> int:
    """Store one batch in one transaction; returns how many samples were new (see
    ``ResultsCache.write_batch``)."""
    with refused_storage(file.path), file.transaction() as con:
        return store_batch(con, runs.run_no(con, run_id), batch, samples_by_index, failed)


def fold_log(file: CacheFile) -> None:
    """Checkpoint after a run is finished, so that its readers replay no log. A disk that
    refuses the checkpoint loses nothing (the log keeps every committed transaction and readers
    replay it), so that refusal is left to the next write to report."""
    try:
        file.checkpoint()
    except CacheError as error:
        if storage_errno(error) is None:
            raise


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")


def _finish(
    con: duckdb.DuckDBPyConnection, path: Path, run_no: int, status: str, message: str
) -> RunInfo:
    """Mark the run finished on an open transaction and close its current session."""
    finished = now()
    row = con.execute("SELECT provenance FROM runs WHERE run_no = ?", [run_no]).fetchone()
    provenance = json.loads(row[0]) if row else {}
    counts = con.execute(
        "SELECT (SELECT count(*) FROM samples WHERE run_no = $r), "
        "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'skipped'), "
        "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'failed')",
        {"r": run_no},
    ).fetchone()
    closing: dict[str, Any] = {"finished_at": finished.isoformat() + "Z", "status": status}
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
        [status, finished, _json(provenance), run_no],
    )
    return runs.info_by_number(con, path, run_no)


def finish_run(file: CacheFile, run_id: str, status: str, message: str = "") -> RunInfo:
    """Mark the run complete, cancelled or failed and close its current session."""
    _check_status(status)
    with refused_storage(file.path):
        with file.transaction() as con:
            run_no, _info = runs.resolve(con, file.path, run_id)
            info = _finish(con, file.path, run_no, status, message)
        try:
            fold_log(file)
        finally:  # finished, its log folded: no longer computed (doctor reads a quiet log)
            liveness.release_run(file.path, info.id)
    return info


def complete_stored_run(file: CacheFile, run_id: str) -> RunInfo:
    """Mark complete a run whose samples are all stored but that was left cancelled, failed or
    interrupted (see ``ResultsCache.complete_stored_run``)."""
    with refused_storage(file.path):
        with file.transaction() as con:
            number = runs.run_no(con, run_id)
            info = runs.info_by_number(con, file.path, number)
            if info.status in ("complete", "running"):
                # done, or a live process (or one on another host) is on it: it finishes the run
                return info  # (a run whose process is gone reads as cancelled, interrupted)
            row = con.execute("SELECT provenance FROM runs WHERE run_no = ?", [number]).fetchone()
            provenance = json.loads(row[0]) if row else {}
            provenance.pop("message", None)  # the last session's failure is no longer the run's
            provenance["status"] = "complete"
            provenance["completed"] = {
                "at": now().isoformat() + "Z",
                "was": "interrupted" if info.interrupted else info.status,
            }
            con.execute(
                "UPDATE runs SET status = 'complete', finished_at = coalesce(finished_at, ?), "
                "provenance = ?, owner_pid = NULL WHERE run_no = ?",
                [now(), _json(provenance), number],
            )
            info = runs.info_by_number(con, file.path, number)
        fold_log(file)
    return info


def store_complete_run(
    file: CacheFile,
    header: RunHeader,
    batches: Iterable[tuple[BatchResult, Mapping[int, Sample]]],
) -> RunInfo:
    """Begin the run, store every batch and finish it complete, all in one transaction (see
    ``ResultsCache.store_complete_run``)."""
    _check_run_id(header.run_id)
    with refused_storage(file.path):
        with file.transaction() as con, _claimed(file, header.run_id) as claimed:
            run_no = _begin(con, header, file.path, claimed)
            for batch, samples_by_index in batches:
                store_batch(con, run_no, batch, samples_by_index)
            info = _finish(con, file.path, run_no, "complete", "")
        try:
            fold_log(file)
        finally:
            liveness.release_run(file.path, header.run_id)
    return info
