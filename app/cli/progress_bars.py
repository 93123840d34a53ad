"""A computation's progress for a person: the loading stages, then a bar per run, on stderr.

Why apart from the commands: this is the whole of what a person watches while a computation
runs, in a terminal (a live stage line giving way to the bars, each with its rate, time left,
loss and memory) or in a log file (one plain line per loading stage, no bars), and ``--quiet``
silences it; the commands only choose it and say what ran (:mod:`.outcome`). A program follows
the same computation through :mod:`.progress_jsonl` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from layerscope.app.cli import output
from layerscope.app.cli.cancellation import Cancellation
from layerscope.app.cli.outcome import Outcome, stopped_early
from layerscope.app.labels import duration

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task

    from layerscope.analysis.base.records import LoadStage
    from layerscope.analysis.models.loading import LoadedModel
    from layerscope.analysis.runs.runner import RunProgress, RunRequest


class StageReport:
    """Tells the user what loading the model is doing while it loads.

    In a terminal the current stage is one live line among the bars ("loading weights" with
    its count, then "computing the first batch") that gives way to the run bars; in a log
    file each stage is one plain line as it begins, saying how long the previous one took (and
    how many weight tensors it loaded), never a line per tensor; ``--quiet`` says nothing.
    """

    def __init__(self, progress: Progress | None, plain: Console | None) -> None:
        self.progress = progress
        self.plain = plain
        self.task: Any = None
        self.current: LoadStage | None = None
        self.began = 0.0
        self.first_began: float | None = None
        self.loaded_at: float | None = None  # when the first batch began: loading is over

    def __call__(self, stage: LoadStage) -> None:
        now = time.perf_counter()
        if self.first_began is None:
            self.first_began = now
        new_step = self.current is None or stage.step != self.current.step
        if new_step and self.plain is not None:
            self.plain.print(f"{stage.description}…{self._previous(now)}")
        if new_step:
            self.began = now
        if stage.step == "first batch":
            self.loaded_at = now
        self.current = stage
        if self.progress is None:
            return
        counted = stage.total is not None and stage.done is not None
        total = stage.total if counted else None
        completed = (stage.done or 0) if counted else 0
        if self.task is not None and total is None and self._counted_task():
            # Rich reads total=None as "unchanged": a stage that cannot count would show the
            # weights' count (0/272) for as long as it lasts; it gets a line of its own
            self.progress.remove_task(self.task)
            self.task = None
        if self.task is None:
            self.task = self.progress.add_task(
                stage.description, total=total, completed=completed, rate="", loss=""
            )
        else:
            self.progress.update(
                self.task, description=stage.description, total=total, completed=completed
            )

    def _counted_task(self) -> bool:
        """Whether the stage line shows a count (of an earlier stage, when this one has none)."""
        assert self.progress is not None
        return any(task.id == self.task and task.total is not None for task in self.progress.tasks)

    def _previous(self, now: float) -> str:
        previous = self.current
        if previous is None:
            return ""
        counted = f"{previous.total} tensors in " if previous.total else ""
        return f" ({previous.description}: {counted}{duration(now - self.began)})"

    @property
    def loading_seconds(self) -> float | None:
        if self.first_began is None or self.loaded_at is None:
            return None
        return self.loaded_at - self.first_began

    def computing_began(self) -> None:
        """The first batch is stored: the stage line gives way to the run bars."""
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
        self.task = None


def execute_with_progress(
    request: RunRequest,
    db: str | None,
    quiet: bool,
    *,
    model: LoadedModel | None = None,
    on_model: Callable[[LoadedModel], None] | None = None,
) -> Outcome:
    """Run a request with its loading stages and progress bars on stderr (``model`` and
    ``on_model``: see the runner's ``execute``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
    )
    from rich.table import Column
    from rich.text import Text

    from layerscope.analysis.runs.distributed import execute  # the runner's, unless under torchrun

    class CountColumn(MofNCompleteColumn):
        """done/total, or nothing for a stage that cannot count."""

        def render(self, task: Task) -> Text:
            return Text("") if task.total is None else super().render(task)

    class EtaColumn(ProgressColumn):
        """The runner's ETA (from the run's measured throughput), counted down between
        batches (to a tenth of it at most): 'ETA 1m05s'; nothing before the first batch."""

        def render(self, task: Task) -> Text:
            eta, at = task.fields.get("eta"), task.fields.get("eta_at")
            if eta is None or at is None or task.finished:
                return Text("")
            # counted down, but never below a tenth of the estimate: a batch slower than the
            # rate so far would otherwise show "ETA 0.0 s" until it lands
            left = max(eta / 10, eta - (time.perf_counter() - at))
            return Text(f"ETA {duration(left)}")

    began = time.perf_counter()
    finals: dict[str, RunProgress] = {}
    started: dict[str, tuple[float, int]] = {}  # run id -> when it started computing, done then
    computing: dict[str, float] = {}
    # At 80 columns the whole line shows: a short bar, the count never cut (the type's name
    # gives way first, with an ellipsis), a compact rate and a countdown.
    columns = (
        TextColumn(
            "{task.description}",
            table_column=Column(no_wrap=True, overflow="ellipsis", min_width=12),
        ),
        BarColumn(bar_width=6),
        CountColumn(table_column=Column(no_wrap=True, min_width=5)),
        TextColumn("{task.fields[rate]}", table_column=Column(no_wrap=True)),
        EtaColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[loss]}", table_column=Column(no_wrap=True)),
    )
    err = output.console(stderr=True)
    # Bars only where someone watches them: redirected to a file, Rich would write one final
    # frame (an empty line when nothing ran); a log gets one line per stage and the summaries.
    bars = not quiet and err.is_terminal
    with (
        Cancellation() as cancellation,
        Progress(*columns, console=err, disable=not bars, transient=True) as progress,
    ):
        # Always a stage listener, even with --quiet: it is what keeps transformers' own
        # "Loading weights" bar out of the output (the runner routes that bar into it).
        stages = StageReport(
            progress if bars else None, err if not quiet and not err.is_terminal else None
        )
        tasks: dict[str, Any] = {}

        def staged(stage: LoadStage) -> None:
            cancellation.stage(stage)
            stages(stage)

        updates = execute(
            request,
            db_path=db,
            cancel=cancellation.event,
            on_stage=staged,
            model=model,
            on_model=on_model,
        )
        for update in updates:
            run_id = update.run_id
            if update.status == "running" and run_id not in started:
                started[run_id] = (time.perf_counter(), update.done)
            elif run_id in started and (
                update.status != "running" or update.done > started[run_id][1]
            ):
                stages.computing_began()
            if run_id in started and update.status != "running":
                computing[run_id] = time.perf_counter() - started[run_id][0]
            if run_id not in tasks and update.status != "cached":
                tasks[run_id] = progress.add_task(
                    f"{update.dataset}/{update.response_type}",
                    total=update.total,
                    rate="",
                    loss="",
                    eta=None,
                    eta_at=None,
                )
            if run_id in tasks:
                rate = throughput(update)
                loss = f"loss {update.mean_loss:.3f}" if update.mean_loss is not None else ""
                if update.status == "running" and update.memory_bytes is not None:
                    loss = f"{loss} {memory_text(update)}".strip()
                progress.update(
                    tasks[run_id],
                    completed=update.done,
                    total=update.total,
                    rate=rate,
                    loss=loss,
                    eta=update.eta_seconds if update.status == "running" else None,
                    eta_at=time.perf_counter(),
                )
            if update.message and update.status == "running":
                progress.console.print(f"{update.dataset}/{update.response_type}: {update.message}")
            finals[run_id] = update
        stopped = cancellation.event.is_set() and stopped_early(finals.values())
        cancelled = cancellation.exit_status if stopped else None
    return Outcome(
        finals=list(finals.values()),
        computing=computing,
        loading=stages.loading_seconds,
        total=time.perf_counter() - began,
        cancelled=cancelled,
    )


def token_rate(tokens_per_second: float) -> str:
    """'850 tok/s', '12.3k tok/s'."""
    if tokens_per_second >= 1000:
        return f"{tokens_per_second / 1000:.1f}k tok/s"
    return f"{tokens_per_second:.0f} tok/s"


def throughput(update: RunProgress) -> str:
    """'2.10/s 1.2k tok/s': samples and tokens per second (empty before the first batch)."""
    if not update.samples_per_second:
        return ""
    rate = f"{update.samples_per_second:.2f}/s"
    if update.tokens_per_second:
        rate += f" {token_rate(update.tokens_per_second)}"
    return rate


def memory_text(update: RunProgress) -> str:
    """'mem 3.1/5.0G' (in use now / at most, GiB; 'rss' on a CPU: the whole process)."""
    if update.memory_bytes is None:
        return ""
    label = "rss" if update.memory_kind == "rss" else "mem"
    now = update.memory_bytes / 2**30
    peak = (update.memory_peak_bytes or update.memory_bytes) / 2**30
    return f"{label} {now:.1f}/{peak:.1f}G"
