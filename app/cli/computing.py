"""``compute`` and ``check``: start the runner, show its progress, stop cleanly on Ctrl-C.

Why these two together: both build a run request from the settings record's options, run it
through :func:`layerscope.analysis.runs.runner.execute` with progress bars on stderr (stdout stays
clean for the run ids), and share the same cancellation: the first Ctrl-C (or SIGTERM) stops
after the current batch, a second stops at once, and either way every stored batch stays so the
same command resumes. What ``check`` computes and compares is the analysis layer's profile
(:mod:`layerscope.analysis.results.profiles`); this module only runs and renders it.

Under torchrun, ``compute`` on rank 0 shows the same progress (over all ranks, from
:func:`layerscope.analysis.runs.distributed.execute`) and the other ranks serve it silently;
``compute --nproc-per-node N`` starts that job itself (:func:`launch_ranks`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.settings import SettingError, Surface
from layerscope.app.cli import output
from layerscope.app.cli.arguments import PROG, UsageError, names, setting_values
from layerscope.app.labels import duration, initialisation
from layerscope.app.settings_presentation import option_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task

    from layerscope.analysis.base.records import LoadStage
    from layerscope.analysis.runs.runner import PlannedRun, RunProgress, RunRequest


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
    from layerscope.analysis.runs.runner import RunRequest

    try:
        return RunRequest.from_settings(
            args.model, args.dataset, types, setting_values(args, surface)
        )
    except SettingError as error:
        raise UsageError(error.describe(option_name)) from None


class Cancellation:
    """First Ctrl-C (or SIGTERM) asks the runner to stop after the current batch; a second
    Ctrl-C interrupts at once. Either way the stored batches stay and a rerun resumes."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # a worker rank stays silent: rank 0 speaks for the job
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
        if self.announce:
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


@dataclass
class Outcome:
    """What a computing command ran: the final progress per run, how long each computed in
    this call, how long loading the model took (None when nothing was loaded), the whole
    call's time, and the exit status a signal asks for (None when none cancelled it)."""

    finals: list[RunProgress]
    computing: dict[str, float]
    loading: float | None
    total: float
    cancelled: int | None


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
        fields = {
            "description": stage.description,
            "total": stage.total if counted else None,
            "completed": stage.done if counted else 0,
        }
        if self.task is None:
            self.task = self.progress.add_task(rate="", loss="", **fields)
        else:
            self.progress.update(self.task, **fields)

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


def execute_with_progress(request: RunRequest, db: str | None, quiet: bool) -> Outcome:
    """Run a request with its loading stages and progress bars on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from layerscope.analysis.runs.distributed import execute  # the runner's, unless under torchrun

    class CountColumn(MofNCompleteColumn):
        """done/total, or nothing for a stage that cannot count."""

        def render(self, task: Task) -> Text:
            return Text("") if task.total is None else super().render(task)

    began = time.perf_counter()
    finals: dict[str, RunProgress] = {}
    started: dict[str, tuple[float, int]] = {}  # run id -> when it started computing, done then
    computing: dict[str, float] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
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
        for update in execute(request, db_path=db, cancel=cancellation.event, on_stage=stages):
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
                )
            if run_id in tasks:
                rate = throughput(update)
                loss = f"loss {update.mean_loss:.3f}" if update.mean_loss is not None else ""
                if update.status == "running" and update.memory_bytes is not None:
                    loss = f"{loss} {memory_text(update)}".strip()
                progress.update(
                    tasks[run_id], completed=update.done, total=update.total, rate=rate, loss=loss
                )
            if update.message and update.status == "running":
                progress.console.print(f"{update.dataset}/{update.response_type}: {update.message}")
            finals[run_id] = update
        cancelled = cancellation.exit_status if cancellation.event.is_set() else None
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
    """'2.10 samples/s 1.2k tok/s' (empty before the first batch)."""
    if not update.samples_per_second:
        return ""
    rate = f"{update.samples_per_second:.2f} samples/s"
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


def cmd_devices(args: argparse.Namespace) -> int:
    """The devices ``--device`` takes; GPUs with their free memory where NVML can tell."""
    import json

    from layerscope.analysis.base.devices import list_gpus, nvml_available

    gpus = list_gpus()
    if args.json:
        rows: list[dict[str, Any]] = [{"device": "cpu"}]
        rows += [
            {
                "device": gpu.device,
                "name": gpu.name,
                "free_bytes": gpu.free_bytes,
                "total_bytes": gpu.total_bytes,
            }
            for gpu in gpus
        ]
        print(json.dumps(rows, indent=2))
    else:
        print("cpu")
        for gpu in gpus:
            print(f"{gpu.device}  {gpu.describe()}")
    if not gpus:
        reason = (
            "no NVIDIA GPU found"
            if nvml_available()
            else "GPUs are listed with nvidia-ml-py (pip install 'layerscope[gpu]')"
        )
        print(
            f"{PROG}: {reason}; once a computation starts its progress shows the "
            "device memory torch reports",
            file=sys.stderr,
        )
    return 0


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


def launcher_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``compute --nproc-per-node N ...`` as torchrun's options and the ranks' command line
    (the same, less torchrun's options); UsageError when the two cannot be told apart."""
    from layerscope.app.cli.grammar import LAUNCHER_OPTIONS, build_parser

    launcher = [f"--nproc-per-node={args.nproc_per_node}"]
    for option, dest in LAUNCHER_OPTIONS.items():
        value = getattr(args, dest)
        if value is not None and dest != "nproc_per_node":
            launcher.append(f"{option}={value}")
    if not any(o.startswith(("--nnodes", "--rdzv", "--master")) for o in launcher):
        launcher.append("--standalone")  # one node: torchrun picks a free port
    ranks: list[str] = []
    tokens = iter(args.argv)
    for token in tokens:
        name = token.partition("=")[0]
        if name in LAUNCHER_OPTIONS:
            if "=" not in token:
                next(tokens, None)
            continue
        ranks.append(token)
    reparsed = vars(build_parser().parse_args(ranks))
    left = [dest for dest in LAUNCHER_OPTIONS.values() if reparsed.pop(dest) is not None]
    expected = {k: v for k, v in vars(args).items() if k not in LAUNCHER_OPTIONS.values()}
    expected.pop("argv", None)
    if left or reparsed != expected:
        raise UsageError(
            f"--nproc-per-node: spell torchrun's options in full ({', '.join(LAUNCHER_OPTIONS)})"
        )
    return launcher, ranks


def launch_ranks(args: argparse.Namespace) -> int:
    """Start the same compute command on N ranks through ``python -m torch.distributed.run``
    and wait for it; Ctrl-C (or SIGTERM) is passed to torchrun, which passes it to the ranks:
    rank 0 stores the finished batches and the same command resumes."""
    import subprocess

    launcher, ranks = launcher_argv(args)
    command = [sys.executable, "-m", "torch.distributed.run", *launcher]
    command += ["-m", "layerscope.app", *ranks]
    # Its own session: a terminal's Ctrl-C reaches torchrun once, through us, not every rank
    # at once (torchrun then signals the ranks itself, and kills them 30 s later).
    child = subprocess.Popen(command, start_new_session=True)

    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status != 0 and forwarded:
        return 128 + forwarded[0]  # 130 for Ctrl-C, as one process exits (torchrun says 1)
    return 128 - status if status < 0 else status


def serve_rank(request: RunRequest) -> int:
    """A rank other than 0: compute what rank 0 hands out, print nothing unless it fails."""
    from layerscope.analysis.runs.distributed import serve

    with Cancellation(announce=False) as cancellation:
        try:
            serve(request, cancellation.event)
        except KeyboardInterrupt:
            return cancellation.exit_status  # rank 0 tells the user
    return cancellation.exit_status if cancellation.event.is_set() else 0


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

    def staged(stage: LoadStage) -> None:
        if stage.step == "first batch" and not loaded_at:
            loaded_at.append(time.perf_counter() - began)
        emit(StageEvent(stage, time.perf_counter() - began))

    with Cancellation() as cancellation:
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
        cancelled = cancellation.exit_status if cancellation.event.is_set() else None
    return Outcome(
        finals=list(finals.values()),
        computing=computing,
        loading=loaded_at[0] if loaded_at else None,
        total=time.perf_counter() - began,
        cancelled=cancelled,
    )


def cmd_compute(args: argparse.Namespace) -> int:
    from layerscope.analysis.runs.distributed import detect, replica_device
    from layerscope.analysis.runs.sharding import ShardError, parse_shard
    from layerscope.app.cli.grammar import LAUNCHER_OPTIONS

    environment = detect()
    if args.nproc_per_node is not None:
        if environment is not None:
            raise UsageError("--nproc-per-node: already running under torchrun")
        return launch_ranks(args)
    given = [o for o, dest in LAUNCHER_OPTIONS.items() if getattr(args, dest) is not None]
    if given:
        raise UsageError(f"{given[0]}: only with --nproc-per-node (torchrun's option)")
    if args.gpus_per_replica is not None and environment is None:
        raise UsageError("--gpus-per-replica: only with --nproc-per-node or under torchrun")
    if args.shard is not None and environment is not None:
        raise UsageError("--shard: not under torchrun (the ranks share the work already)")
    worker = environment is not None and not environment.coordinator
    quiet_loading(args.quiet or worker or args.progress_format == "jsonl")
    check_instruct(args.model, args.mode)
    request = build_request(args, "compute", names(args.types))
    if args.shard is not None:
        try:
            request.shard = parse_shard(args.shard)
        except ShardError as error:
            raise UsageError(error.message) from None  # its option named by main
    if environment is not None:
        request.device = replica_device(environment, request.device, args.gpus_per_replica)
        if (args.gpus_per_replica or 1) > 1 and request.device_map == "none":
            # A replica larger than one GPU: spread it over the rank's own (narrowed) GPUs.
            request.device_map = "auto"
        if worker:
            return serve_rank(request)
    if args.progress_format == "jsonl":
        outcome = execute_jsonl(request, args.db)
        err = output.console(stderr=True)
        for line in summary_lines(outcome):
            err.print(line)
        if outcome.cancelled is not None:
            print(
                "cancelled: finished batches are stored; run the same command to resume",
                file=sys.stderr,
            )
            return outcome.cancelled
        return 0
    outcome = execute_with_progress(request, args.db, args.quiet)
    if sys.stdout.isatty():
        # Someone reads stdout: each run once, as its summary line (its id starts the line).
        for line in summary_lines(outcome):
            print(line, flush=True)
    else:
        # A script reads stdout: the ids alone; the summary goes to stderr for the person.
        for final in outcome.finals:
            print(final.run_id, flush=True)
        err = output.console(stderr=True)
        for line in summary_lines(outcome):
            err.print(line)
    if outcome.cancelled is not None:
        print(
            "cancelled: finished batches are stored; run the same command to resume",
            file=sys.stderr,
        )
        return outcome.cancelled
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from layerscope.analysis.base.records import ATTENTION_PROJECTIONS
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.results.profiles import ProfileError, check_pairs, check_types
    from layerscope.analysis.runs.distributed import detect
    from layerscope.analysis.runs.runner import resolve_sources
    from layerscope.app.cli.arguments import projections
    from layerscope.app.cli.browsing import metric_name, report
    from layerscope.app.labels import short_model

    if detect() is not None:
        raise UsageError("check runs in one process; use compute under torchrun")
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
    outcome = execute_with_progress(request, args.db, args.quiet)
    err = output.console(stderr=True)
    for line in summary_lines(outcome):  # stdout is the profile's; runs are told on stderr
        err.print(line)
    if outcome.cancelled is not None:
        print(f"{PROG}: cancelled; run the same command to resume", file=sys.stderr)
        return outcome.cancelled
    cache = ResultsCache(args.db)
    by_type = {final.response_type: final.run_id for final in outcome.finals}
    infos = [cache.run(by_type[t]) for t in request.types if t in by_type]
    if not args.proj:
        args.proj = ",".join(p for p in ATTENTION_PROJECTIONS if p in infos[0].projections)
    title = f"{metric} by layer, {short_model(infos[0].model)}, ≤{args.limit}/type"
    if initialisation(infos[0]):
        title += f", {initialisation(infos[0])}"
    return report(cache, infos, args, check_pairs(by_type), title)
