"""Watches the ranks of a distributed test run from inside (on PYTHONPATH, Python imports it
at start-up in the launcher, torchrun and every rank).

Active only when ``LAYERSCOPE_PROBE_DIR`` is set. It records, in that folder, which rank opened
a results cache (``opened``: one line per ``ResultsCache``, the ``RANK``) and each stored batch
(``stored``: one line per transaction). With ``LAYERSCOPE_PROBE_BLOCK_RANK=R``, rank R computes
its first unit, then writes its pid to ``blocked`` and blocks in its second one until it is
killed: the test then kills a rank that has a batch stored and one in flight.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_DIR = os.environ.get("LAYERSCOPE_PROBE_DIR")


def _append(name: str, line: str) -> None:
    assert _DIR is not None
    with open(Path(_DIR) / name, "a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


def _install() -> None:
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.runs import distributed

    rank = os.environ.get("RANK", "-")
    opened = ResultsCache.__init__
    written = ResultsCache.write_batch

    def record_open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _append("opened", rank)
        opened(self, *args, **kwargs)

    def record_write(self, run_id, batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        new = written(self, run_id, batch, *args, **kwargs)
        _append("stored", f"{run_id} {len(batch.results)}")
        return new

    ResultsCache.__init__ = record_open  # type: ignore[method-assign]
    ResultsCache.write_batch = record_write  # type: ignore[method-assign]

    if os.environ.get("LAYERSCOPE_PROBE_BLOCK_RANK") == rank:
        compute = distributed.compute_unit
        units = []

        def block_second(*args, **kwargs):  # type: ignore[no-untyped-def]
            units.append(1)
            if len(units) == 2:
                _append("blocked", str(os.getpid()))
                threading.Event().wait()  # until the test kills this rank
            return compute(*args, **kwargs)

        distributed.compute_unit = block_second


if _DIR and "RANK" in os.environ:
    _install()
