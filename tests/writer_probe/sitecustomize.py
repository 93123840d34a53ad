"""Holds a `layerscope compute` mid-run for a test (on PYTHONPATH, Python imports it at
start-up).

Active only when ``LAYERSCOPE_HOLD_AFTER=N`` is set: once the process has stored its N-th batch
(the transaction committed), it blocks in the cache's batch writer until it is killed. With
``LAYERSCOPE_PAUSE_AT=P`` and ``LAYERSCOPE_PAUSE_FILE=path`` it also waits after its P-th batch
until that file exists. A test can then act on a writer that is certainly still running, with
exactly P, then N, batches stored, however fast or slow the machine is, instead of giving it
many samples and hoping it is not done yet.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_AFTER = os.environ.get("LAYERSCOPE_HOLD_AFTER")


def _install(after: int) -> None:
    from layerscope.analysis.cache import ResultsCache

    written = ResultsCache.write_batch
    pause_at = int(os.environ.get("LAYERSCOPE_PAUSE_AT", "0"))
    pause_file = Path(os.environ.get("LAYERSCOPE_PAUSE_FILE", "/nonexistent"))
    stored = []

    def write_then_hold(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        new = written(self, *args, **kwargs)
        stored.append(1)
        if len(stored) == pause_at:
            while not pause_file.exists():  # until the test creates it
                time.sleep(0.01)
        if len(stored) >= after:
            threading.Event().wait()  # until the test kills this process
        return new

    ResultsCache.write_batch = write_then_hold  # type: ignore[method-assign]


if _AFTER:
    _install(int(_AFTER))
