"""A computation's progress for a program: one JSON object per line on stdout
(``compute --progress-format jsonl``).

Why apart from the bars: a program reads these lines, so their form is the analysis layer's
codec (:mod:`layerscope.analysis.runs.progress_codec`, which the explorer reads too when it
runs a computation in a subprocess), not anything meant for a person, and nothing else may be
written to stdout meanwhile.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from layerscope.app.cli.cancellation import Cancellation
from layerscope.app.cli.outcome import Outcome, stopped_early

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LoadStage
    from layerscope.analysis.runs.runner import PlannedRun, RunProgress, RunRequest


def execute_jsonl(request: RunRequest, db: str | None) -> Outcome:
    """Run a request writing one JSON object per line on stdout for a program to follow.

    The lines are the records of :mod:`layerscope.analysis.runs.progress_codec`: the plan, each
    loading stage and each progress update. Ctrl-C and SIGTERM behave as with bars; nothing
    else is written to stdout.
    """
    from layerscope.analysis.runs.distributed import execute  # the runner's, unless under torchrun
    from layerscope.analysis.runs.progress_codec import (
        PlanEvent,
        ProgressEvent,
        ProgressRecord,
        StageEvent,
        encode,
    )

    began = time.perf_counter()
    finals: dict[str, RunProgress] = {}
    started: dict[str, float] = {}
    computing: dict[str, float] = {}
    loaded_at: list[float] = []

    def emit(record: ProgressRecord) -> None:
        sys.stdout.write(encode(record) + "\n")
        sys.stdout.flush()

    def planned(runs: list[PlannedRun]) -> None:
        emit(PlanEvent(tuple(runs)))

    cancellation = Cancellation()

    def staged(stage: LoadStage) -> None:
        cancellation.stage(stage)
        if stage.step == "first batch" and not loaded_at:
            loaded_at.append(time.perf_counter() - began)
        emit(StageEvent(stage, time.perf_counter() - began))

    with cancellation:
        for update in execute(
            request, db_path=db, cancel=cancellation.event, on_plan=planned, on_stage=staged
        ):
            now = time.perf_counter()
            if update.status == "running":
                started.setdefault(update.run_id, now)
            elif update.run_id in started:
                computing[update.run_id] = now - started[update.run_id]
            emit(ProgressEvent(update, now - began))
            finals[update.run_id] = update
        stopped = cancellation.event.is_set() and stopped_early(finals.values())
        cancelled = cancellation.exit_status if stopped else None
    return Outcome(
        finals=list(finals.values()),
        computing=computing,
        loading=loaded_at[0] if loaded_at else None,
        total=time.perf_counter() - began,
        cancelled=cancelled,
    )
