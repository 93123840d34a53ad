"""``compute`` and ``check``: start the runner, show its progress, stop cleanly on Ctrl-C.

Why these two together: both build a run request from the settings record's options, run it
through :func:`layerscope.analysis.runner.execute` with progress bars on stderr (stdout stays
clean for the run ids), and share the same cancellation: the first Ctrl-C (or SIGTERM) stops
after the current batch, a second stops at once, and either way every stored batch stays so the
same command resumes. What ``check`` computes and compares is the analysis layer's profile
(:mod:`layerscope.analysis.profiles`); this module only runs and renders it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from layerscope.analysis.settings import SettingError, Surface
from layerscope.app.cli import output
from layerscope.app.cli.arguments import PROG, UsageError, flag_name, names, setting_values

if TYPE_CHECKING:
    from layerscope.analysis.runner import RunProgress, RunRequest

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention; a SIGTERM exits 143


def quiet_loading(quiet: bool) -> None:
    """--quiet, or a stderr that is no terminal, also silences the loader's own progress bar
    ("Loading weights"), which would otherwise write its frames into a log file."""
    if not quiet and sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when transformers is imported
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def check_instruct(model: str, mode: str) -> None:
    if mode != "instruct":
        return
    from layerscope.analysis.models import has_chat_template

    if not has_chat_template(model):
        raise UsageError(f"--mode instruct: model {model!r} has no chat template")


def build_request(
    args: argparse.Namespace, surface: Surface, types: list[str] | None = None
) -> RunRequest:
    """The run request of a computing command; a rejected setting is a usage error."""
    from layerscope.analysis.runner import RunRequest

    try:
        return RunRequest.from_settings(
            args.model, args.dataset, types, setting_values(args, surface)
        )
    except SettingError as error:
        raise UsageError(error.describe(flag_name)) from None


class Cancellation:
    """First Ctrl-C (or SIGTERM) asks the runner to stop after the current batch; a second
    Ctrl-C interrupts at once. Either way the stored batches stay and a rerun resumes."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None  # the first signal that asked to stop
        self._previous: dict[int, Any] = {}

    @property
    def exit_status(self) -> int:
        """128 + the signal that stopped the run (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signal if self.signal is not None else signal.SIGINT)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signum
        self.event.set()
        print(
            f"{PROG}: stopping after the current batch (Ctrl-C again to stop now)",
            file=sys.stderr,
        )

    def __enter__(self) -> Cancellation:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def execute_with_progress(
    request: RunRequest, db: str | None, quiet: bool
) -> tuple[list[RunProgress], int | None]:
    """Run a request with progress bars; the final progress per run and, when a signal
    cancelled it, the exit status to end with (None otherwise)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from layerscope.analysis.runner import execute

    finals: dict[str, RunProgress] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
    )
    err = output.console(stderr=True)
    # Bars only where someone watches them: redirected to a file, Rich would write one final
    # frame (an empty line when nothing ran); the summaries below say what happened.
    bars = not quiet and err.is_terminal
    with (
        Cancellation() as cancellation,
        Progress(*columns, console=err, disable=not bars) as progress,
    ):
        tasks: dict[str, Any] = {}
        for update in execute(request, db_path=db, cancel=cancellation.event):
            if update.run_id not in tasks:
                tasks[update.run_id] = progress.add_task(
                    f"{update.dataset}/{update.response_type}",
                    total=update.total,
                    rate="",
                    loss="",
                )
            rate = f"{update.samples_per_second:.2f} samples/s" if update.samples_per_second else ""
            loss = f"loss {update.mean_loss:.3f}" if update.mean_loss is not None else ""
            progress.update(
                tasks[update.run_id],
                completed=update.done,
                total=update.total,
                rate=rate,
                loss=loss,
            )
            if update.message and update.status == "running":
                progress.console.print(f"{update.dataset}/{update.response_type}: {update.message}")
            finals[update.run_id] = update
        cancelled = cancellation.exit_status if cancellation.event.is_set() else None
    return list(finals.values()), cancelled


def cmd_compute(args: argparse.Namespace) -> int:
    quiet_loading(args.quiet)
    check_instruct(args.model, args.mode)
    request = build_request(args, "compute", names(args.types))
    finals, cancelled = execute_with_progress(request, args.db, args.quiet)
    err = output.console(stderr=True)
    for final in finals:
        print(final.run_id)
        extra = []
        if final.skipped:
            extra.append(f"{final.skipped} skipped")
        if final.failed:
            extra.append(f"{final.failed} failed")
        suffix = f" ({', '.join(extra)})" if extra else ""
        err.print(
            f"{final.run_id[:12]}  {final.dataset}/{final.response_type}  {final.status}  "
            f"{final.done}/{final.total}{suffix}"
        )
    if cancelled is not None:
        err.print("cancelled: finished batches are stored; run the same command to resume")
        return cancelled
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.profiles import ProfileError, check_pairs, check_types
    from layerscope.analysis.records import ATTENTION_PROJECTIONS
    from layerscope.analysis.runner import resolve_sources
    from layerscope.app.cli.arguments import projections
    from layerscope.app.cli.browsing import metric_name, report
    from layerscope.app.labels import short_model

    quiet_loading(args.quiet)
    metric = metric_name(args.metric)
    projections(args.proj)
    check_instruct(args.model, args.mode)
    request = build_request(args, "check")
    available = [source.response_type for source in resolve_sources(request)]
    try:
        request.types = check_types(available, args.dataset)
    except ProfileError as error:
        raise UsageError(str(error)) from None
    finals, cancelled = execute_with_progress(request, args.db, args.quiet)
    if cancelled is not None:
        print(f"{PROG}: cancelled; run the same command to resume", file=sys.stderr)
        return cancelled
    cache = ResultsCache(args.db)
    by_type = {final.response_type: final.run_id for final in finals}
    infos = [cache.run(by_type[t]) for t in request.types if t in by_type]
    if not args.proj:
        args.proj = ",".join(p for p in ATTENTION_PROJECTIONS if p in infos[0].projections)
    title = f"{metric} by layer, {short_model(infos[0].model)}, ≤{args.limit}/type"
    return report(cache, infos, args, check_pairs(by_type), title)
