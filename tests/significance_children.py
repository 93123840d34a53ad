"""Where the explorer computes its tests of significance in a test: in a thread of the test's
own process (`in_thread`: a monkeypatch there reaches them), or in the real spawned process,
set up before its first test (``spawn_process(setup, setup_args)``) by a function here, which
the child imports by name (it gets the parent's ``sys.path``, where conftest put tests/)."""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.results import pair_significance

FAILURE = "the tests failed on purpose"


def in_thread() -> Executor:
    """For ``LayerscopeApp(significance_executor=...)``: the tests computed in a thread of this
    process, where a monkeypatch of the analysis layer reaches them."""
    return ThreadPoolExecutor(max_workers=1)


def hold(gate: Any) -> None:
    """The child's tests wait until the test releases `gate` (a multiprocessing Semaphore(0):
    not an Event, whose set() waits for every waiter to wake, forever for a killed child)."""
    real = pair_significance.significance_rows

    def held(*args: Any, **kwargs: Any) -> Any:
        if not gate.acquire(timeout=60):
            raise TimeoutError("the test never released the tests of significance")
        gate.release()  # open for good
        return real(*args, **kwargs)

    pair_significance.significance_rows = held


def fail() -> None:
    """The child's tests raise (an error the user reads as one line)."""

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise QueryError(FAILURE)

    pair_significance.significance_rows = failing


def die() -> None:
    """The child dies in the middle of its tests (killed, out of memory)."""

    def dying(*args: Any, **kwargs: Any) -> Any:
        os._exit(3)

    pair_significance.significance_rows = dying
