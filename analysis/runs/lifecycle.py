"""A stored run's life: begun, written batch by batch, and always finished.

Why one lifecycle: a computed run is created, skips what is stored, writes batches and must be
left complete, cancelled or failed whatever happens, so that the same command resumes it; two
hand-written copies had already drifted apart. :class:`StoredRun` is that path once (the runner
uses it; the paper-format import does not: an imported file is stored whole or not at all, in
one transaction, by ``ResultsCache.store_complete_run``):

* entering begins the run (``ResultsCache.begin_run``, with its settings and this session's
  provenance); :meth:`StoredRun.done_indices` says what is already stored;
* :meth:`StoredRun.write` stores one batch, one transaction each;
* leaving finishes the run: ``complete`` when the block ends normally, ``cancelled`` when the
  cancel event is set or the block ends by ``GeneratorExit`` (a closed generator) or
  ``KeyboardInterrupt``, ``failed`` with the error's one line (:func:`one_line`) otherwise. The
  exception still propagates; :attr:`StoredRun.status` and :attr:`StoredRun.message` tell what
  was recorded.

A run whose samples are all stored is complete, however it was stopped: when the cancel event
was set during or after the last batch, a run told which samples this call must leave stored
(``expected``) finishes ``complete`` if they are; and a run that an earlier call left cancelled,
failed or interrupted with nothing missing is marked complete by :func:`complete_if_stored`
(the runner asks for every run it finds cached), so that ``runs`` and the next plan agree.

A disk that refuses a write (full, over quota, read-only: the cache's ``StorageError``, or an
``OSError`` of the kind) stops the run at once: nothing more can be stored, so retrying samples
would only record them as failed. The run is left ``cancelled`` (resumable, the refusal
recorded as its message) when the disk still takes that much, else ``running`` under this
process, which ``runs`` shows as interrupted once it has ended; either way the same command
resumes it. The error propagates as a ``StorageError`` saying so.

:func:`package_version` is the one way a run's provenance names the versions it was made with.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import one_line
from layerscope.analysis.base.records import (
    BatchResult,
    RunHeader,
    RunInfo,
    Sample,
    SkippedSample,
)
from layerscope.analysis.cache import CacheError, StorageError, UnknownRunError, storage_errno

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache

__all__ = [
    "CANCELLED",
    "INTERRUPTED",
    "MARKED_COMPLETE",
    "RESUME",
    "StoredRun",
    "complete_if_stored",
    "package_version",
]

# What a cancelled run's progress says (the run itself records no message for a cancel).
CANCELLED = "cancelled; run the same command to resume"
INTERRUPTED = "interrupted; run the same command to resume"
# How a disk's refusal ends, said to whoever computes.
RESUME = "and run the same command to resume (the batches stored so far are kept)"
# What a cached run's progress says when an earlier call had left it unfinished.
MARKED_COMPLETE = "every sample is stored: marked complete"


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``unknown``."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


class StoredRun:
    """One run being written to the cache, as a context manager (see the module docs)."""

    def __init__(
        self,
        cache: ResultsCache,
        header: RunHeader,
        cancel: threading.Event | None = None,
        expected: Collection[int] | None = None,
    ) -> None:
        self.cache = cache
        self.header = header
        self.run_id = header.run_id
        self.cancel = cancel
        # The samples this call must leave stored: all stored, a cancel came too late to stop
        # anything and the run is complete (None: a cancel always cancels).
        self.expected = expected
        self.info: RunInfo | None = None  # as begun, then as finished
        self.status = "running"
        self.message = ""

    def __enter__(self) -> StoredRun:
        try:
            self.info = self.cache.begin_run(self.header)
        except StorageError as refused:  # the runs before this one are stored
            raise refused.then(RESUME) from refused.__cause__
        self.status = "failed"  # until the block says otherwise
        return self

    def done_indices(self) -> set[int]:
        """Indices that need no computing (stored or deliberately skipped), as stored now."""
        return self.cache.done_indices(self.run_id)

    def write(
        self,
        batch: BatchResult,
        samples_by_index: Mapping[int, Sample],
        failed: Sequence[SkippedSample] = (),
    ) -> int:
        """Store one batch in one transaction; returns how many samples were new."""
        return self.cache.write_batch(self.run_id, batch, samples_by_index, failed=failed)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        refused = storage_errno(error) if isinstance(error, Exception) else None
        if error is None:
            if self.cancel is not None and self.cancel.is_set() and not self._all_stored():
                self.status, self.message = "cancelled", CANCELLED
            else:
                self.status, self.message = "complete", ""
        elif isinstance(error, (GeneratorExit, KeyboardInterrupt)):
            self.status, self.message = "cancelled", INTERRUPTED
        elif refused is not None:  # nothing more can be stored: resumable, not failed
            said = self._refusal(refused) if isinstance(error, CacheError) else error
            self.status, self.message = "cancelled", one_line(said, with_type=said is error)
        else:
            self.status, self.message = "failed", one_line(error, with_type=True)
        recorded = self.message if self.status == "failed" or refused is not None else ""
        try:
            self.info = self.cache.finish_run(self.run_id, self.status, recorded)
        except StorageError as finishing:
            if refused is None:
                raise finishing.then(RESUME) from error
            # The disk takes not even the run's status: it stays running under this process.
            self.status = "running"
        if refused is not None and isinstance(error, CacheError):
            raise self._refusal(refused) from error  # an OSError of another file goes on as is

    def _refusal(self, number: int) -> StorageError:
        """The disk's refusal as the runner says it: where, and that the same command resumes."""
        return StorageError(number, Path(self.cache.path).absolute().parent, RESUME)

    def _all_stored(self) -> bool:
        """Whether every expected sample is stored (or deliberately skipped) now."""
        if self.expected is None:
            return False
        try:
            return set(self.expected) <= self.done_indices()
        except CacheError:
            return False  # cannot tell: cancelled, and the next call sees


def complete_if_stored(cache: ResultsCache, run_id: str) -> RunInfo | None:
    """Mark complete the run ``run_id`` when an earlier call left it cancelled, failed or
    interrupted although the caller found none of its samples missing (stopped during or right
    after its last batch); returns it when it was marked, None when there was nothing to do (no
    such run, complete already, or a live process computing it) or the disk refused the write
    (the next call tries again: a full disk must not fail a request that computes nothing)."""
    try:
        info = cache.run(run_id)
    except UnknownRunError:
        return None
    if info.status in ("complete", "running"):
        return None
    try:
        return cache.complete_stored_run(run_id)
    except StorageError:
        return None
