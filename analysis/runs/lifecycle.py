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

:func:`package_version` is the one way a run's provenance names the versions it was made with.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
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

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache

__all__ = ["CANCELLED", "INTERRUPTED", "StoredRun", "package_version"]

# What a cancelled run's progress says (the run itself records no message for a cancel).
CANCELLED = "cancelled; run the same command to resume"
INTERRUPTED = "interrupted; run the same command to resume"


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
    ) -> None:
        self.cache = cache
        self.header = header
        self.run_id = header.run_id
        self.cancel = cancel
        self.info: RunInfo | None = None  # as begun, then as finished
        self.status = "running"
        self.message = ""

    def __enter__(self) -> StoredRun:
        self.info = self.cache.begin_run(self.header)
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
        if error is None:
            if self.cancel is not None and self.cancel.is_set():
                self.status, self.message = "cancelled", CANCELLED
            else:
                self.status, self.message = "complete", ""
        elif isinstance(error, (GeneratorExit, KeyboardInterrupt)):
            self.status, self.message = "cancelled", INTERRUPTED
        else:
            self.status, self.message = "failed", one_line(error, with_type=True)
        recorded = self.message if self.status == "failed" else ""
        self.info = self.cache.finish_run(self.run_id, self.status, recorded)
