"""Holds a `layerscope compute` mid-run for a test (on PYTHONPATH, Python imports it at
start-up).

Active only when ``LAYERSCOPE_HOLD_AFTER=N`` is set: once the process has stored its N-th batch
(the transaction committed), it blocks in the cache's batch writer until it is killed. A test can
then act on a writer that is certainly still running, with exactly N batches stored, however fast
or slow the machine is, instead of giving it many samples and hoping it is not done yet.
"""

from __future__ import annotations

import os
import threading

_AFTER = os.environ.get("LAYERSCOPE_HOLD_AFTER")


def _install(after: int) -> None:
    from layerscope.analysis.cache import ResultsCache

    written = ResultsCache.write_batch
    stored = []

    def write_then_hold(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        new = written(self, *args, **kwargs)
        stored.append(1)
        if len(stored) >= after:
            threading.Event().wait()  # until the test kills this process
        return new

    ResultsCache.write_batch = write_then_hold  # type: ignore[method-assign]


if _AFTER:
    _install(int(_AFTER))
