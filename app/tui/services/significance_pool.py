"""The tests of significance behind the chart's marks, computed in a process of their own.

Why another process: a pair's first tests import scipy (0.7 s of CPU), read every shared
sample's values and draw 9,999 sign patterns per projection. In a thread of the explorer's
process they held the GIL in long stretches, so on a study-sized cache the UI thread could not
paint the curves (read before the tests) until the tests ended. In a child process they take
no time from the UI thread; the explorer's worker thread only waits for the answer, which
releases the GIL.

How: one ``ProcessPoolExecutor`` with one worker, started with ``spawn`` (the explorer has
threads, which ``fork`` would copy in whatever state they are), made at the first test and not
at start-up (the first frame does not pay for it), shut down when the explorer closes: what is
pending is cancelled and the child is ended, so no process outlives the explorer. The child
opens the cache file by its path and calls
:func:`~layerscope.analysis.results.pair_significance.significance_rows` there, which keeps the tests in the file
as it does in any process (best-effort, never waiting for a lock): the explorer's next read of
the pair finds them. The child's function, :func:`compute_tests`, lives here at module level,
and this module imports nothing but the standard library at import, so the child imports no
more than the analysis layer needs (never torch, never Textual).

Tests are asked for curves the explorer read earlier, by another connection: when a run has
stored more samples since, the child answers None (nothing tested) rather than test a mix of
the two states, and the chart reads its curves again.

A child that raises hands its error back (the chart says the tests failed, in one line); a
child that dies breaks the pool, which is dropped, so the next test starts a fresh one. The
executor is made by a factory the App may be given: tests pass one that makes a
``ThreadPoolExecutor``, so the same code runs in-process where they hold the tests back.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, CancelledError, Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import LayerscopeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from layerscope.analysis.base.records import LayerCurve
    from layerscope.analysis.curves.significance import ProjectionSignificance

ExecutorFactory = Callable[[], Executor]


def spawn_process(
    setup: Callable[..., object] | None = None, setup_args: tuple[object, ...] = ()
) -> Executor:
    """The executor the explorer computes its tests in: one spawned child process, which
    writes nothing to the terminal the explorer draws on. `setup(*setup_args)` runs in the
    child before its first test (a module-level function: the tests' hook into the child)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _start_resource_tracker()
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_child,
        initargs=(setup, setup_args),
    )


def _start_resource_tracker() -> None:
    """Start multiprocessing's tracker of the pool's semaphores (once per process) with no
    `sys.stderr` to hand on: it passes that file's descriptor to the tracker, and Textual's
    capture of stderr says -1, which starting a process refuses ("bad value(s) in
    fds_to_keep"). The tracker inherits the process's descriptor 2 anyway."""
    if os.name != "posix":
        return
    from multiprocessing import resource_tracker

    with contextlib.redirect_stderr(io.StringIO()):
        resource_tracker.ensure_running()


def start_child(setup: Callable[..., object] | None, setup_args: tuple[object, ...]) -> None:
    """In the tests' process, first: its standard output and error go nowhere (they are the
    terminal the explorer draws on; errors come back as exceptions, not text), then `setup`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for descriptor in (1, 2):
        os.dup2(devnull, descriptor)
    os.close(devnull)
    if setup is not None:
        setup(*setup_args)


@dataclass(frozen=True)
class ComputedTests:
    """What the child hands back: the tests (None: a run stored more since its curves were
    read), the process they were computed in and the CPU seconds the computation took there,
    as that process counts them (the benchmark reports them; in a thread pool, the count is the
    whole process's, every thread's)."""

    significance: list[ProjectionSignificance] | None
    pid: int
    cpu_seconds: float


def compute_tests(
    db_path: str,
    curves: Sequence[LayerCurve],
    pairs: Sequence[tuple[str, str]],
    metric: str,
    response_tokens: tuple[int, int] | None,
    stored: Mapping[str, tuple[int, str | None]] | None = None,
) -> ComputedTests:
    """In the tests' process: the tests of each pair, read from the cache file at `db_path`
    (and kept there for next time); None when a run's stored state is no longer `stored`."""
    started = time.process_time()
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.results import pair_significance

    rows: list[ProjectionSignificance] | None
    with ResultsCache(db_path) as cache:
        try:
            rows = pair_significance.significance_rows(
                cache, curves, pairs, metric, response_tokens, stored=stored
            )
        except pair_significance.RunsChanged:
            rows = None
    return ComputedTests(rows, os.getpid(), time.process_time() - started)


class SignificanceProcessEnded(LayerscopeError):
    """The process computing the tests ended before it answered (killed, out of memory)."""


class SignificanceCancelled(LayerscopeError):
    """The explorer is closing: the tests asked for are no longer computed."""


class SignificancePool:
    """Computes the tests of significance off the UI process (see the module docstring).

    `compute` blocks until the tests arrive: call it from a worker thread. `shutdown` when the
    explorer closes. `pids` and `cpu_seconds` say where the tests were computed and what they
    cost there.
    """

    def __init__(self, db_path: Path, executor: ExecutorFactory | None = None) -> None:
        self.db_path = db_path
        self._make = executor if executor is not None else spawn_process
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.pids: set[int] = set()
        self.cpu_seconds = 0.0

    def compute(
        self,
        curves: Sequence[LayerCurve],
        pairs: Sequence[tuple[str, str]],
        metric: str,
        response_tokens: tuple[int, int] | None,
        stored: Mapping[str, tuple[int, str | None]] | None = None,
    ) -> list[ProjectionSignificance] | None:
        """The tests of b against a for each (a, b) of `pairs`, computed in the pool's process
        (an error there is raised here); None when a run stored more than `stored` (each run's
        stored state when `curves` were read) says."""
        with self._lock:  # no shutdown while a process starts: it would miss that one
            executor = self._current()
            try:
                future = executor.submit(
                    compute_tests,
                    str(self.db_path),
                    list(curves),
                    list(pairs),
                    metric,
                    response_tokens,
                    dict(stored) if stored is not None else None,
                )
            except RuntimeError as error:  # found broken (BrokenExecutor is a RuntimeError)
                self._executor = None
                _stop(executor)
                raise self._lost() from error
        try:
            done = future.result()
        except BrokenExecutor as error:  # the child died (or was ended: the explorer closing)
            self._discard(executor)
            raise self._lost() from error
        except CancelledError as error:
            raise SignificanceCancelled("the explorer is closing") from error
        with self._lock:
            self.pids.add(done.pid)
            self.cpu_seconds += done.cpu_seconds
        return done.significance

    def shutdown(self) -> None:
        """Cancel what is pending and end the pool's process (the explorer is closing)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            _stop(executor)

    def _current(self) -> Executor:
        """The pool, made now if there is none (called holding the lock)."""
        if self._closed:
            raise SignificanceCancelled("the explorer is closing")
        if self._executor is None:
            self._executor = self._make()
        return self._executor

    def _lost(self) -> LayerscopeError:
        """Why a pool that can no longer answer did not."""
        if self._closed:
            return SignificanceCancelled("the explorer is closing")
        return SignificanceProcessEnded(
            "the process computing them ended unexpectedly (killed, or out of memory?); the "
            "next comparison starts a new one"
        )

    def _discard(self, executor: Executor) -> None:
        """A broken pool is dropped (and ended): the next test makes a fresh one."""
        with self._lock:
            if self._executor is not executor:
                return
            self._executor = None
        _stop(executor)


def _stop(executor: Executor) -> None:
    """Shut `executor` down without waiting for its work: what is pending is cancelled, its
    processes (if any) are ended and reaped, so that none outlives the explorer nor makes it
    wait for a test to finish.

    The pool's own manager thread reaps them (it joins its processes when the pool shuts down
    or breaks, as ending them does); joining them here as well would race with it for each
    exit status, and a status one thread takes the other never sees."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    for process in processes:
        process.terminate()
    executor.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        manager.join(timeout=10)
    for process in processes:  # only if the manager thread did not end in time
        if process.exitcode is None:
            process.kill()
            process.join(timeout=5)
