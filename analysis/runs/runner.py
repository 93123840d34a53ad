"""Running computations against the cache: compute what is missing, nothing twice.

Why a runner apart from the engine: the engine turns samples into statistics and knows nothing
of files, keys or resumption; the CLI and the TUI both need the same orchestration around it:
resolve the dataset into response-type sources, key each (model, data file, response type,
settings) run, skip what the cache already holds, load the model only when something is
missing, store each batch in one transaction, and leave every run marked complete, cancelled or
failed, whatever happens. Both call :func:`execute`, a plain generator that yields a
:class:`RunProgress` per stored batch and checks a ``threading.Event`` between batches.

Which runs a request touches, their keys and what is already cached is
:mod:`~layerscope.analysis.runs.planning`'s (re-exported here: callers import the runner alone);
keying, loading, counting and recording a run is the execution core's
(:mod:`~layerscope.analysis.runs.execution`), which the torchrun coordinator shares, so a run is the
same run in one process or over several.

Failures: a sample the engine skips (no response token left after truncation, ...) is recorded
as skipped with its reason and never retried. When computing a chunk raises, its samples are
retried one at a time, so one bad sample cannot sink a run; a sample that fails alone (or runs
out of memory even alone) is recorded as failed and retried on the next call. A chunk in which
no sample succeeds stops the run as failed with the error. A disk that refuses a write (full,
over quota, read-only) is no sample's failure: it stops the run at once, resumable, and the
request with a ``StorageError`` naming the cache's folder (see
:mod:`~layerscope.analysis.runs.lifecycle`).

Cancelling (the ``threading.Event``) stops after the batch in flight: the engine finishes it and
it is stored; no batch is started after the event is set. A run whose selected samples are all
stored when it stops is complete, not cancelled, and a run an earlier call left cancelled with
nothing missing is marked complete when a request finds it cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import is_internal, quoted
from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.runs.execution import (
    ChunkFailed,
    cached_progress,
    compute_with_retries,
    load_model_for,
    plan_execution,
    run_header,
    store,
)
from layerscope.analysis.runs.lifecycle import StoredRun
from layerscope.analysis.runs.planning import (
    Job,
    PlannedRun,
    RunnerError,
    RunRequest,
    plan,
    resolve_dtype,
    resolve_sources,
    run_key,
    select_samples,
)
from layerscope.analysis.runs.tally import RunProgress, Tally

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel

__all__ = [
    "PlannedRun",
    "RunProgress",
    "RunRequest",
    "RunnerError",
    "execute",
    "plan",
    "resolve_dtype",
    "resolve_sources",
    "run_key",
    "select_samples",
]

# Batches per engine call: a chunk that raises is retried sample by sample.
CHUNK_BATCHES = 8


def execute(
    request: RunRequest,
    db_path: Path | str | None = None,
    cancel: threading.Event | None = None,
    on_plan: Callable[[list[PlannedRun]], None] | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
    *,
    model: LoadedModel | None = None,
    on_model: Callable[[LoadedModel], None] | None = None,
) -> Iterator[RunProgress]:
    """Compute every missing sample of the request's runs, yielding progress per batch.

    ``model`` is the request's model already loaded (by an earlier call for the same model and
    settings, handed out through ``on_model`` when it loaded it): ``check``'s rounds load it once.

    ``on_plan`` receives the runs this call touches (as :func:`plan` would return them, from
    the same reading of the data and the cache) before anything is computed, so a caller that
    shows a plan does not plan twice. ``on_stage`` hears each step of loading the model (see
    :class:`~layerscope.analysis.base.records.LoadStage`), ending with "first batch".

    A request whose runs are all cached imports neither torch nor the model: ``auto`` dtype is
    first resolved from the device files, and only when something is missing does torch decide
    it (should the two differ, the request is planned again with torch's answer).

    Raises DatasetError, ModelLoadError (both ValueError), CacheError (StorageError when the
    disk refuses a write) or RunnerError with a one-line message. Closing the generator (or
    KeyboardInterrupt) marks the current run cancelled; its stored batches stay and the next
    call resumes after them.
    """
    planned = plan_execution(request, db_path, on_stage)
    if on_plan is not None:
        on_plan(planned.planned_runs())
    loaded = model
    targets = [] if loaded is None else loaded.targets(request.settings.modules)
    for job in planned.jobs:
        tally = Tally(job)
        if not job.missing:
            yield cached_progress(planned, job)
            continue
        if cancel is not None and cancel.is_set():
            yield tally.progress("cancelled", "cancelled before it started")
            return
        if loaded is None:
            loaded = load_model_for(request, planned.dtype, on_stage)
            targets = loaded.targets(request.settings.modules)
            if on_model is not None:
                on_model(loaded)
        header = run_header(request, planned, job, loaded, targets)
        expected = [s.index for s in job.selected]  # all stored: complete, cancel or not
        with StoredRun(planned.cache, header, cancel, expected) as stored_run:
            tally = Tally(job, loaded.device)  # rates from here: loading is not computing
            yield tally.progress("running")
            yield from _compute_job(request, stored_run, loaded, job, tally, cancel)
        yield tally.progress(stored_run.status, stored_run.message)
        if stored_run.status == "cancelled":
            return


def _compute_job(
    request: RunRequest,
    run: StoredRun,
    loaded: LoadedModel,
    job: Job,
    tally: Tally,
    cancel: threading.Event | None,
) -> Iterator[RunProgress]:
    by_index = {s.index: s for s in job.missing}
    chunk_size = max(1, request.settings.batch_size) * CHUNK_BATCHES
    for start in range(0, len(job.missing), chunk_size):
        if cancel is not None and cancel.is_set():
            return
        chunk = job.missing[start : start + chunk_size]
        try:
            for computed in compute_with_retries(loaded, chunk, request.settings, cancel):
                yield store(run, tally, computed, by_index)
        except ChunkFailed as failed:
            # A layerscope error is the request's (a setting the model refuses); anything else
            # is a bug or torch's failure, which the front ends show as internal.
            raise RunnerError(
                f"{job.source.label}: computing failed for every sample of a chunk: "
                f"{quoted(failed.error)}",
                internal=is_internal(failed.error),
            ) from failed.error
