"""The health of a cache file: what ``layerscope doctor`` checks, and the two repairs it makes.

Why a package of its own: a damaged cache used to surface as whatever the first query tripped
over (DuckDB's checksum message, "no runs" for a file full of them, an internal KeyError), and
the user had no way to ask "what is wrong with this file, and what do I do?". :func:`examine`
answers that: it looks at the file from the outside in and returns one :class:`Finding` per
line, each saying what it found and, when something needs doing, what. Examining never changes
the file; only :func:`set_aside_wal` and :func:`repair` do, each on request and after a copy of
the file is made beside it.

Its modules, one concern each:

* :mod:`.report`: the records (:class:`Finding`, :class:`HealthReport`) the checks and the
  repairs share;
* :mod:`.file_checks`: the file as a whole (the variables the cache reads, the write-ahead log,
  the schema version);
* :mod:`.run_checks`: the runs (counts against their sessions', interrupted runs);
* :mod:`.sum_checks`: every run's curve sums against its statistics rows;
* :mod:`.stray_rows`: orphaned and duplicated rows, found and removed;
* :mod:`.examining`: :func:`examine`, the checks in order on a connection in bounded memory;
* :mod:`.repairs`: :func:`set_aside_wal` and :func:`repair`.

The names below are re-exported here for the command that runs them.
"""

from __future__ import annotations

from layerscope.analysis.cache.health.examining import examine
from layerscope.analysis.cache.health.repairs import repair, set_aside_wal
from layerscope.analysis.cache.health.report import Finding, HealthReport

__all__ = ["Finding", "HealthReport", "examine", "repair", "set_aside_wal"]
