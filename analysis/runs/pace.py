"""How fast a run being computed grows, and when it will reach what was requested, told from
what the cache stores.

Why here and from the cache: a run computed by another process (``layerscope compute`` in
another terminal, on another rank) reports its progress to that process alone; whoever only
reads the cache sees its counts. Successive reads of the same run give its rate (samples per
second over the last minute of reads); until two reads differ, the run's current session gives
one (what it holds now less what it held when the session began, ``handled_at_start``, over the
time since the session's ``started_at``). The ETA is to the samples the request asked for
(:attr:`~layerscope.analysis.base.records.RunInfo.samples_requested`), not to the file's size.

Pure arithmetic on records and times given to it: the explorer's runs browser keeps a
:class:`PaceTracker` fed by its scans and draws what it answers; tests give the times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from layerscope.analysis.base.records import RunInfo

__all__ = ["WINDOW_SECONDS", "Pace", "PaceTracker", "pace_between", "session_pace"]

# Reads older than this no longer enter a run's rate (the latest two always do).
WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Pace:
    """A running run's rate in samples per second, and the seconds left until it holds what
    was requested (None: nothing is left, or no rate to tell by)."""

    rate: float
    eta_seconds: float | None


def pace_between(
    handled_then: int, then: datetime, handled_now: int, at: datetime, target: int
) -> Pace | None:
    """The pace from two counts of a run's handled samples at two times; None when it did not
    grow or no time passed between them."""
    seconds = (at - then).total_seconds()
    grown = handled_now - handled_then
    if seconds <= 0 or grown <= 0:
        return None
    rate = grown / seconds
    left = target - handled_now
    return Pace(rate, left / rate if left > 0 else None)


def _utc(value: object) -> datetime | None:
    """A stored time (ISO text with a Z, or a datetime) as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.removesuffix("Z"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def session_pace(run: RunInfo, at: datetime) -> Pace | None:
    """The pace of the run's current session so far, when it recorded what it began with."""
    provenance = run.provenance or {}
    started = _utc(provenance.get("started_at"))
    at_start = provenance.get("handled_at_start")
    if started is None or not isinstance(at_start, int):
        return None
    return pace_between(at_start, started, run.samples_handled, at, run.samples_requested)


class PaceTracker:
    """The paces of the running runs over successive reads of the cache.

    :meth:`observe` is given every read's runs and the (aware) time of the read; it answers the
    pace of each running run it can tell one of. A run that stops running is forgotten.
    """

    def __init__(self, window_seconds: float = WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._seen: dict[str, list[tuple[datetime, int]]] = {}

    def observe(self, runs: Iterable[RunInfo], at: datetime) -> dict[str, Pace]:
        paces: dict[str, Pace] = {}
        seen: dict[str, list[tuple[datetime, int]]] = {}
        for run in runs:
            if run.status != "running":
                continue
            before = self._seen.get(run.id, [])
            if before and run.samples_handled < before[-1][1]:
                before = []  # fewer than before: begun again, another run's counts
            recent = [(t, n) for t, n in before if (at - t).total_seconds() <= self.window_seconds]
            kept = [*(recent or before[-1:]), (at, run.samples_handled)]
            seen[run.id] = kept
            then, handled_then = kept[0]
            pace = pace_between(
                handled_then, then, run.samples_handled, at, run.samples_requested
            ) or session_pace(run, at)
            if pace is not None:
                paces[run.id] = pace
        self._seen = seen
        return paces
