"""Rank 0 of a torchrun job: it plans, hands out the work, stores every batch, and computes too.

Why rank 0 owns the plan and the cache: DuckDB allows one writer, and a cache file shared
across nodes would also need a shared filesystem. So rank 0 plans the request's runs through
the execution core (:func:`~layerscope.analysis.runs.execution.plan_execution`: keyed exactly as
one process keys them, resuming exactly as it does), opens the cache, and hands out work *on
request*: a worker asks for a unit (one batch: sample records of one run), computes it, and
sends what it computed back with its next request; rank 0 stores each batch in one
transaction, as a single process does, and replies with the next unit. Units go out longest
first (by text length), so with skewed lengths (detailed chains of thought are ten times longer
than bare answers) the long ones do not end up last on one rank: the slowest rank finishes close
to the others.

Rank 0 also computes, as one more worker, in a thread of its own (its main thread stores and
yields progress, a second thread answers the other ranks): on a GPU node rank 0 has a GPU like
the others, and on two CPU ranks a coordinator that only coordinated would halve the
throughput (``benchmarks/bench_distributed.py`` measures it).

Faults: rank 0 stores every batch as it arrives, so whatever happens the stored batches stay
and the same command computes only what is missing. A signal (Ctrl-C through torchrun, or
torchrun tearing the job down because a rank died) sets the cancel event: rank 0 stops handing
out units, stores what is still in flight (waiting at most :data:`GRACE_SECONDS`, and not at
all for a rank whose heartbeat has stopped), and marks unfinished runs cancelled; a lost
connection to a rank, or one silent for a minute, marks them failed with the reason. Either
way no run stays marked running: every run is held open as a
:class:`~layerscope.analysis.runs.lifecycle.StoredRun` in one ``ExitStack``, finished as its last
sample is stored, the rest when the stack is left.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import one_line
from layerscope.analysis.base.records import (
    BatchResult,
    ComputeSettings,
    LoadStage,
    Sample,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.runs.execution import (
    ExecutionPlan,
    cached_progress,
    load_model_for,
    plan_execution,
    run_header,
    store,
)
from layerscope.analysis.runs.lifecycle import StoredRun
from layerscope.analysis.runs.planning import PlannedRun, RunnerError, RunRequest
from layerscope.analysis.runs.rank_messages import (
    LOST_SECONDS,
    Pulse,
    Report,
    Setup,
    Unit,
    broadcast,
    init_group,
    key_value_store,
    plan_units,
    receive,
    send,
)
from layerscope.analysis.runs.tally import RunProgress, Tally

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel

__all__ = ["GRACE_SECONDS", "ComputeUnit", "coordinate"]

# How long rank 0 waits, once cancelled, for batches still in flight on other ranks (torchrun
# kills what is left 30 s after its own signal, so this stays below that).
GRACE_SECONDS = 20.0
_POLL_SECONDS = 0.2  # how often rank 0's store loop looks at the cancel event while it waits

# How a rank computes a unit (``distributed.compute_unit``): its batches and its failures.
ComputeUnit = Callable[
    ["LoadedModel", Sequence[Sample], ComputeSettings, "threading.Event | None"],
    list[BatchResult | SkippedSample],
]


def coordinate(
    request: RunRequest,
    world_size: int,
    db_path: Path | str | None,
    cancel: threading.Event,
    on_plan: Callable[[list[PlannedRun]], None] | None,
    on_stage: Callable[[LoadStage], None] | None,
    compute: ComputeUnit | None,
) -> Iterator[RunProgress]:
    """Rank 0's side of a torchrun job: the progress one process would yield, over all ranks.

    ``compute``: how rank 0 computes its own units, or None to leave the computing to the
    other ranks (for measurements). Planning fails on every rank at once: rank 0 tells the
    others why before it raises.
    """
    dist = init_group()
    try:
        planned = plan_execution(request, db_path, on_stage)
    except BaseException as error:
        broadcast(dist, Setup(error=one_line(error)))
        raise
    broadcast(dist, Setup(dtype=planned.dtype, compute=planned.missing))
    if on_plan is not None:
        on_plan(planned.planned_runs())
    if not planned.missing:
        for job in planned.jobs:
            yield cached_progress(planned, job)
        return
    loaded = load_model_for(request, planned.dtype, on_stage)
    targets = loaded.targets(request.settings.modules)
    yield from _store_all(
        request, world_size, dist, planned, loaded, targets, cancel, compute
    )  # fmt: skip


@dataclass
class _OpenRun:
    """A run rank 0 stores into: the stored run, the stack whose closing finishes it, its
    tally, its missing samples by index and how many of them are still out."""

    stored: StoredRun
    finish: ExitStack
    tally: Tally
    by_index: dict[int, Sample]
    left: int


_CANCELLED = threading.Event()
_CANCELLED.set()


def _store_all(
    request: RunRequest,
    world_size: int,
    dist: Any,
    planned: ExecutionPlan,
    loaded: LoadedModel,
    targets: Sequence[TargetInfo],
    cancel: threading.Event,
    compute: ComputeUnit | None,
) -> Iterator[RunProgress]:
    stop = threading.Event()  # no more units: cancelled, or a rank was lost
    runs: dict[str, _OpenRun] = {}  # open ones; each leaves as it is finished
    failure = ""
    lost: RunnerError | None = None
    try:
        with ExitStack() as every_run:  # leaving it finishes every run still open
            for job in planned.jobs:
                tally = Tally(job)
                if not job.missing:
                    yield cached_progress(planned, job)
                    continue
                header = run_header(request, planned, job, loaded, targets, world_size=world_size)
                finish = every_run.enter_context(ExitStack())
                stored = finish.enter_context(StoredRun(planned.cache, header))
                by_index = {s.index: s for s in job.missing}
                runs[job.run_id] = _OpenRun(stored, finish, tally, by_index, len(job.missing))
                yield tally.progress("running")
            units = plan_units(planned.jobs, request.settings.batch_size)
            dispenser = _Dispenser(units, stop)
            try:
                failure = yield from _collect(
                    dist, world_size, loaded, request.settings, compute, dispenser, runs,
                    {unit.number: unit for unit in units}, cancel, stop,
                )  # fmt: skip
            finally:
                stop.set()
            if failure:
                lost = RunnerError(f"{failure}; run the same command to resume")
                raise lost  # every run still open is finished failed, with it
            for run in runs.values():
                run.stored.cancel = _CANCELLED  # unfinished without a failure: resumable
    except RunnerError as error:
        if error is not lost:
            raise
    for run in runs.values():
        yield run.tally.progress(run.stored.status, run.stored.message)
    if failure and not cancel.is_set():
        raise RunnerError(f"{failure}; finished batches are stored, run the same command again")


def _collect(
    dist: Any,
    world_size: int,
    loaded: LoadedModel,
    settings: ComputeSettings,
    compute: ComputeUnit | None,
    dispenser: _Dispenser,
    runs: dict[str, _OpenRun],
    units: dict[int, Unit],
    cancel: threading.Event,
    stop: threading.Event,
) -> Generator[RunProgress, None, str]:
    """Hand out the units and store what comes back until the ranks are done (or gone);
    returns why the job failed ("" when it did not)."""
    events: queue.Queue[Any] = queue.Queue()
    threads = [
        threading.Thread(
            target=_answer_ranks,
            args=(dist, world_size, dispenser, events),
            name="layerscope-ranks",
            daemon=True,
        )
    ]
    if compute is not None:
        threads.append(
            threading.Thread(
                target=_compute_here,
                args=(loaded, settings, compute, dispenser, events, cancel),
                name="layerscope-compute",
                daemon=True,
            )
        )
    failure = ""
    grace_ends: float | None = None
    pulse = Pulse(key_value_store(dist))
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        if cancel.is_set():
            stop.set()
            if grace_ends is None:
                grace_ends = time.monotonic() + GRACE_SECONDS
        try:
            kind, payload = events.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if grace_ends is None:
                lost = [r for r in dispenser.holders() if r and pulse.silent(r, LOST_SECONDS)]
                if lost:
                    return failure or f"rank {lost[0]} stopped answering"
                continue
            waiting = [r for r in dispenser.holders() if r == 0 or not pulse.silent(r)]
            if not waiting or time.monotonic() > grace_ends:
                break  # the ranks still holding a unit are gone; their units stay missing
            continue
        if kind in ("ranks finished", "local finished"):
            running -= 1
        elif kind == "lost":
            failure = failure or f"lost a rank: {payload}"
            stop.set()
        elif kind == "report":
            report: Report = payload
            if report.error:
                failure = failure or f"rank {report.rank}: {report.error}"
                stop.set()
            if report.unit is None:
                continue
            run_id = units[report.unit].run_id
            run = runs[run_id]
            for computed in report.computed:  # each batch in its own transaction
                yield store(run.stored, run.tally, computed, run.by_index)
            run.left -= report.handled
            if run.left <= 0:
                del runs[run_id]
                run.finish.close()  # complete
                yield run.tally.progress(run.stored.status, run.stored.message)
    return failure


class _Dispenser:
    """The units not yet handed out, longest first (none once stopped), and which rank holds
    which unit now."""

    def __init__(self, units: Sequence[Unit], stop: threading.Event) -> None:
        self._units = list(reversed(units))  # pop() from the end takes the longest
        self._lock = threading.Lock()
        self._stop = stop
        self.held: dict[int, int] = {}  # rank -> unit number it is computing

    def take(self, rank: int) -> Unit | None:
        with self._lock:
            self.held.pop(rank, None)
            if self._stop.is_set() or not self._units:
                return None
            unit = self._units.pop()
            self.held[rank] = unit.number
            return unit

    def returned(self, rank: int) -> None:
        with self._lock:
            self.held.pop(rank, None)

    def holders(self) -> list[int]:
        with self._lock:
            return list(self.held)


def _answer_ranks(
    dist: Any, world_size: int, dispenser: _Dispenser, events: queue.Queue[Any]
) -> None:
    """Rank 0's second thread: receive each report, pass it on, reply with the next unit."""
    active = set(range(1, world_size))
    try:
        while active:
            report, source = receive(dist)
            events.put(("report", report))
            if report.final:
                dispenser.returned(source)
                active.discard(source)
                continue
            unit = dispenser.take(source)
            send(dist, unit, source)
            if unit is None:
                active.discard(source)
    except Exception as error:
        events.put(("lost", one_line(error, with_type=True)))
    finally:
        events.put(("ranks finished", None))


def _compute_here(
    loaded: LoadedModel,
    settings: ComputeSettings,
    compute: ComputeUnit,
    dispenser: _Dispenser,
    events: queue.Queue[Any],
    cancel: threading.Event,
) -> None:
    """Rank 0's computing thread: one more worker, reporting through the same queue."""
    from layerscope.analysis.compute.numerics import flush_subnormals_for_this_process

    flush_subnormals_for_this_process()  # per thread: this one computes
    try:
        while (unit := dispenser.take(0)) is not None:
            computed = compute(loaded, unit.samples, settings, cancel)
            events.put(("report", Report(0, unit.number, computed)))
    except BaseException as error:
        events.put(("report", Report(0, final=True, error=one_line(error, with_type=True))))
    finally:
        events.put(("local finished", None))
