"""Merging caches: the runs of source cache files joined into one destination, none twice.

Why: array jobs (``compute --shard I/N``, :mod:`~layerscope.analysis.runs.sharding`) write N
node-local caches, each holding part of the same runs; users also copy caches between
machines. A merge must give the destination exactly what one process computing everything
would have stored, and must never choose silently between two different values.

The rules:

* Runs are matched by key (their id, a content hash of model, data and settings), samples by
  index. A run the destination lacks is created with the source's header (model, settings,
  matrices, provenance); a sample it lacks is copied through the cache's own batch writer
  (:func:`layerscope.analysis.cache.writes.store_batch`), so the per-layer and cosine sums stay
  exactly those of the stored rows. Nothing in the destination is ever overwritten.
* A sample both hold is compared value by value: loss, token counts, texts, every statistic of
  every matrix, spectra, cosines and the sample's own fields. Numbers agree when equal within
  a relative tolerance (default :data:`DEFAULT_RTOL`, 1e-5: float32 storage keeps about 7
  digits, so recomputing on another device in float32 agrees to it; bfloat16 runs computed
  twice do not, and are reported); NaN agrees with NaN and with an empty value. Every
  disagreement is a :class:`~.merge_conflicts.Conflict` (the first differing value of the
  sample, with how many differ), the destination keeps its value, and the command exits
  non-zero.
* One transaction per run in the destination: an interrupted merge leaves the runs it finished
  merged and the others untouched, and running it again continues (what is present is counted
  as present, not copied twice).
* The destination run's status is recomputed from what it holds: complete when a source (or
  the destination) held the whole run (complete and unsharded), or when it now holds as many
  samples as the sharded request asked for; otherwise it stays resumable ("cancelled"), its
  provenance naming the shards it holds, so ``runs`` shows it as partial.

Sources are opened read-only (never upgraded in place: a source of an older schema is refused
with the command that upgrades it) and must not be the destination. Before anything is copied,
the destination must be nothing yet or a cache this layerscope reads, and every source a DuckDB
file (:func:`~.cache_path.check_cache_path`); once the destination holds runs, one removed
during the merge is said to be gone, never created again. SQL only with parameters.

This module applies the rules run by run; reading a run's samples back a chunk at a time is
:mod:`.stored_samples`', and judging whether two copies of a sample agree is
:mod:`.merge_conflicts`'.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.base.errors import mention, one_line
from layerscope.analysis.base.records import BatchResult, SkippedSample
from layerscope.analysis.cache import liveness
from layerscope.analysis.cache.cache_path import check_cache_path
from layerscope.analysis.cache.connection import (
    CacheFile,
    NoFile,
    default_lock_timeout,
    now,
)
from layerscope.analysis.cache.errors import CacheError
from layerscope.analysis.cache.merge_conflicts import Conflict, compare_samples
from layerscope.analysis.cache.schema import (
    SCHEMA_VERSION,
    SchemaVersionUnreadable,
    schema_version,
)
from layerscope.analysis.cache.stored_samples import (
    StoredSample,
    chunks,
    read_chunk,
    skipped_samples,
    stored_indices,
)
from layerscope.analysis.cache.writes import fold_log, store_batch

__all__ = ["DEFAULT_RTOL", "MergeError", "RunMerge", "merge_caches"]

DEFAULT_RTOL = 1e-5


class MergeError(CacheError):
    """A merge that cannot start: a source that is missing, not a cache, of another schema
    version, or the destination itself. One line naming the file."""


@dataclass
class RunMerge:
    """What merging one source run did."""

    source: Path
    run_id: str
    label: str  # dataset/type
    created: bool = False
    copied: int = 0
    present: int = 0  # samples (or skipped ones) the destination already held, equal
    conflicts: list[Conflict] = field(default_factory=list)
    status: str = ""
    held: int = 0  # samples the destination run holds afterwards (stored + skipped)
    requested: int | None = None  # what the whole request asked for, where a shard says
    left_out: str = ""  # why nothing of this run was merged (a process computes it right now)

    def line(self) -> str:
        if self.left_out:
            return f"{self.run_id[:12]}  {self.label}  left out: {self.left_out}"
        of = f"/{self.requested}" if self.requested else ""
        new = ", new run" if self.created else ""
        return (
            f"{self.run_id[:12]}  {self.label}  copied {self.copied}, already present "
            f"{self.present}, conflicts {len(self.conflicts)}; {self.status} "
            f"{self.held}{of}{new}"
        )


# ---- opening ----------------------------------------------------------------------------------


def _open_source(path: Path, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a source cache of this schema version (never upgraded)."""
    if not path.exists():
        raise MergeError(f"{path}: no such cache file")
    file = CacheFile(path, lock_timeout)
    try:
        con = file.open(write=False)
    except NoFile:
        raise MergeError(f"{path}: no such cache file") from None
    try:
        version = schema_version(con)
    except SchemaVersionUnreadable as unreadable:
        con.close()
        raise MergeError(f"{path}: {unreadable}: run `layerscope doctor --db {path}`") from None
    if version is None or version == 0:
        con.close()
        raise MergeError(f"{path} is a DuckDB file but not a layerscope cache")
    if version != SCHEMA_VERSION:
        con.close()
        if version > SCHEMA_VERSION:
            raise MergeError(
                f"{path} has cache schema version {version}, newer than the {SCHEMA_VERSION} "
                "this layerscope knows: upgrade layerscope"
            )
        raise MergeError(
            f"{path} has cache schema version {version}, older than {SCHEMA_VERSION}: merge "
            f"opens sources read-only; upgrade it first with `layerscope runs --db {path}` "
            "(or merge a copy)"
        )
    return con


# ---- one run ----------------------------------------------------------------------------------

_RUN_FIELDS = (
    "id, model, dataset, response_type, mode, status, samples_total, layers, projections, "
    "settings, provenance, started_at, finished_at"
)


def _create_run(
    con: duckdb.DuckDBPyConnection, source: duckdb.DuckDBPyConnection, source_no: int
) -> int:
    """The source run's header in the destination (status set when the merge finishes)."""
    row = con.execute("SELECT coalesce(max(run_no), 0) + 1 FROM runs").fetchone()
    run_no = int(row[0]) if row else 1
    header = source.execute(
        f"SELECT {_RUN_FIELDS} FROM runs WHERE run_no = ?",  # noqa: S608 (constant column list)
        [source_no],
    ).fetchone()
    assert header is not None
    con.execute(
        f"INSERT INTO runs (run_no, {_RUN_FIELDS}, owner_pid, owner_host) "  # noqa: S608 (constant column list)
        "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        [run_no, *header[:5], *header[6:]],
    )
    targets = source.execute(
        "SELECT layer, projection::VARCHAR, parameter, rows, cols FROM targets WHERE run_no = ?",
        [source_no],
    ).fetchall()
    if targets:
        con.execute(
            "INSERT INTO targets SELECT ?, unnest(?::SMALLINT[]), "
            "unnest(?::projection_name[]), unnest(?::VARCHAR[]), unnest(?::INTEGER[]), "
            "unnest(?::INTEGER[])",
            [run_no, *([t[i] for t in targets] for i in range(5))],
        )
    return run_no


def _finish_status(
    con: duckdb.DuckDBPyConnection,
    run_no: int,
    merge: RunMerge,
    source_status: str,
    source_provenance: dict[str, Any],
    source_path: Path,
) -> None:
    """Recompute the destination run's status from what it holds (see module docs)."""
    row = con.execute(
        "SELECT status, provenance, samples_total FROM runs WHERE run_no = ?", [run_no]
    ).fetchone()
    assert row is not None
    before, provenance, samples_total = str(row[0]), json.loads(row[1]), int(row[2])
    counts = con.execute(
        "SELECT (SELECT count(*) FROM samples WHERE run_no = $r), "
        "(SELECT count(*) FROM skipped WHERE run_no = $r AND kind = 'skipped')",
        {"r": run_no},
    ).fetchone()
    assert counts is not None
    held = int(counts[0]) + int(counts[1])
    shards = set(provenance.get("shards") or [])
    whole = before == "complete" and not provenance.get("shard") and not merge.created
    if provenance.get("shard"):
        shards.add(str(provenance["shard"]))
    source_shard = source_provenance.get("shard")
    if source_shard:
        shards.add(str(source_shard))
    elif source_status == "complete":
        whole = True
    requested = [
        int(p["requested"])
        for p in (provenance, source_provenance)
        if isinstance(p.get("requested"), int)
    ]
    wanted = max(requested) if requested else None
    complete = whole or (wanted is not None and held >= wanted)
    status = "complete" if complete else "cancelled"
    provenance.pop("shard", None)
    if wanted is not None:
        provenance["requested"] = wanted
    if shards:
        provenance["shards"] = sorted(shards, key=lambda s: [int(p) for p in s.split("/")])
    if complete:
        provenance.pop("shards", None)
    history = provenance.get("merged") or []
    history.append({
        "source": str(source_path),
        "source_status": source_status,
        "shard": source_shard,
        "copied": merge.copied,
        "present": merge.present,
        "conflicts": len(merge.conflicts),
        "at": now().isoformat() + "Z",
        "pid": os.getpid(),
    })  # fmt: skip
    provenance["merged"] = history
    provenance["status"] = status
    con.execute(
        "UPDATE runs SET status = ?, provenance = ?, samples_total = ?, "
        "finished_at = coalesce(finished_at, ?), owner_pid = NULL WHERE run_no = ?",
        [status, json.dumps(provenance, sort_keys=True, default=str), samples_total, now(), run_no],
    )
    merge.status, merge.held, merge.requested = status, held, wanted


def _merge_run(
    con: duckdb.DuckDBPyConnection,
    destination: Path,
    source: duckdb.DuckDBPyConnection,
    source_path: Path,
    source_no: int,
    run_id: str,
    label: str,
    rtol: float,
) -> RunMerge:
    """One source run into the destination, on the destination's open transaction."""
    merge = RunMerge(source_path, run_id, label)
    row = con.execute(
        "SELECT run_no, status, owner_pid, owner_host FROM runs WHERE id = ?", [run_id]
    ).fetchone()
    if row is None:
        run_no = _create_run(con, source, source_no)
        merge.created = True
    else:
        run_no, status, owner_pid, owner_host = int(row[0]), row[1], row[2], row[3]
        if (
            owner_pid is not None
            and owner_pid != os.getpid()
            and liveness.computing(destination, run_id, status, int(owner_pid), owner_host) is True
        ):
            # this run only: the others of the source are merged (nobody computes them)
            merge.left_out = (
                f"being computed into the destination by PID {owner_pid} right now; merge "
                "again once it ends"
            )
            return merge
    source_row = source.execute(
        "SELECT status, provenance, samples_total FROM runs WHERE run_no = ?", [source_no]
    ).fetchone()
    assert source_row is not None
    source_status, source_provenance = str(source_row[0]), json.loads(source_row[1])
    con.execute(
        "UPDATE runs SET samples_total = greatest(samples_total, ?) WHERE run_no = ?",
        [int(source_row[2]), run_no],
    )
    held = set(stored_indices(con, run_no))
    held_skipped = skipped_samples(con, run_no)
    source_skipped = skipped_samples(source, source_no)
    for low, high in chunks(stored_indices(source, source_no)):
        incoming = read_chunk(source, source_no, low, high)
        overlap = [i for i in incoming if i in held]
        existing = read_chunk(con, run_no, low, high) if overlap else {}
        new: list[StoredSample] = []
        for index, stored in incoming.items():
            if index in held:
                conflict = compare_samples(run_id, existing[index], stored, rtol)
                if conflict is None:
                    merge.present += 1
                else:
                    merge.conflicts.append(conflict)
            elif held_skipped.get(index, ("", ""))[0] == "skipped":
                reason = held_skipped[index][1]
                merge.conflicts.append(
                    Conflict(run_id, index, "stored or skipped", f"skipped: {reason}", "stored")
                )
            else:
                new.append(stored)
        if new:
            batch = BatchResult([s.result for s in new], [], len(new), len(new))
            merge.copied += store_batch(con, run_no, batch, {s.sample.index: s.sample for s in new})
    skipped, failed = [], []
    for index, (kind, reason) in sorted(source_skipped.items()):
        if kind == "skipped":
            if index in held:
                merge.conflicts.append(
                    Conflict(run_id, index, "stored or skipped", "stored", f"skipped: {reason}")
                )
            elif held_skipped.get(index, ("", ""))[0] == "skipped":
                merge.present += 1
            else:
                skipped.append(SkippedSample(index, reason))
        elif index not in held and index not in held_skipped:
            failed.append(SkippedSample(index, reason))
    if skipped or failed:
        batch = BatchResult([], skipped, len(skipped), len(skipped))
        merge.copied += store_batch(con, run_no, batch, {}, failed)
    _finish_status(con, run_no, merge, source_status, source_provenance, source_path)
    return merge


# ---- the whole merge --------------------------------------------------------------------------


def merge_caches(
    sources: Sequence[Path | str],
    destination: Path | str,
    *,
    rtol: float = DEFAULT_RTOL,
    lock_timeout: float | None = None,
    on_run: Callable[[RunMerge], None] | None = None,
) -> list[RunMerge]:
    """Merge every run of each source into ``destination`` (created if absent), one
    transaction per run; returns what each run's merge did (``on_run`` hears each as it is
    committed). Raises :class:`MergeError` (or another ``CacheError``) with one line."""
    if not math.isfinite(rtol) or rtol < 0:
        raise MergeError(f"{mention('rtol')} must be a non-negative number, got {rtol}")
    timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
    target = CacheFile(Path(destination).expanduser(), timeout)
    paths = [Path(s).expanduser() for s in sources]
    for path in paths:
        if path.exists() and target.path.exists() and path.resolve() == target.path.resolve():
            raise MergeError(f"{path} is the destination itself: give another {mention('into')}")
    # Before anything is copied: the destination is nothing yet or a cache of ours (not a CSV
    # file DuckDB would open as an empty database in memory, a FIFO, a newer schema, ...), and
    # each source is at least a DuckDB file.
    existed = check_cache_path(target.path)
    if existed:
        with target.reading():
            pass
    for path in paths:
        check_cache_path(path)
    results: list[RunMerge] = []
    for path in paths:
        source = _open_source(path, timeout)
        try:
            runs = source.execute(
                "SELECT run_no, id, dataset, response_type FROM runs ORDER BY run_no"
            ).fetchall()
            for source_no, run_id, dataset, response_type in runs:
                # Once the destination holds runs, it is never created again: one removed
                # while the merge writes is said to be gone.
                stays = target.existing() if existed else contextlib.nullcontext()
                try:
                    with stays, target.transaction() as con:
                        merge = _merge_run(
                            con,
                            target.path,
                            source,
                            path,
                            int(source_no),
                            str(run_id),
                            f"{dataset}/{response_type}",
                            rtol,
                        )
                except duckdb.Error as error:
                    raise CacheError(f"{path}: {one_line(error)}") from None
                existed = True
                results.append(merge)
                if on_run is not None:
                    on_run(merge)
        finally:
            source.close()
    if results:
        fold_log(target)  # a disk that refuses it loses nothing: every run is committed
    return results
