"""What a computing command ran, and its summary: one line per run, one for the whole call.

Why its own module: the call is run by either progress output (:mod:`.progress_bars`,
:mod:`.progress_jsonl`), and ``compute`` and ``check`` both say what it ran in these lines,
where the output goes differing between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerscope.app.labels import duration

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunProgress


@dataclass
class Outcome:
    """What a computing command ran: the final progress per run, how long each computed in
    this call, how long loading the model took (None when nothing was loaded), the whole
    call's time, and the exit status a signal asks for (None when none cancelled it, or when
    it came too late to leave any run unfinished)."""

    finals: list[RunProgress]
    computing: dict[str, float]
    loading: float | None
    total: float
    cancelled: int | None


def stopped_early(finals: Iterable[RunProgress]) -> bool:
    """Whether a cancelled call left a run unfinished: a signal that came during or after the
    last batch stopped nothing (every run complete or cached), and the call succeeded."""
    return any(final.status not in ("complete", "cached") for final in finals)


def summary_lines(outcome: Outcome, full_ids: bool = False) -> list[str]:
    """One line per run (its id, data/type, status, count, time computing in this call), then
    one for the whole call: how long it took and how much of that was loading the model."""
    lines = []
    for final in outcome.finals:
        extra = []
        if final.skipped:
            extra.append(f"{final.skipped} skipped")
        if final.failed:
            extra.append(f"{final.failed} failed")
        if final.status == "cached" and final.message:  # an unfinished run found all stored
            extra.append(final.message)
        suffix = f" ({', '.join(extra)})" if extra else ""
        seconds = outcome.computing.get(final.run_id)
        took = f" in {duration(seconds)}" if seconds is not None else ""
        run_id = final.run_id if full_ids else final.run_id[:12]
        lines.append(
            f"{run_id}  {final.dataset}/{final.response_type}  {final.status} "
            f"{final.done}/{final.total}{suffix}{took}"
        )
    count = len(outcome.finals)
    if all(final.status == "cached" for final in outcome.finals):
        runs = "the run is" if count == 1 else f"all {count} runs are"
        lines.append(f"{runs} cached: nothing to compute ({duration(outcome.total)})")
    else:
        loading = f" (loading {duration(outcome.loading)})" if outcome.loading is not None else ""
        lines.append(f"done in {duration(outcome.total)}{loading}")
    return lines
