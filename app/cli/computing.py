"""``compute``, ``check`` and ``devices``: a computation asked for from a shell.

Why these together: ``compute`` and ``check`` build a run request from the settings record's
options, run it through :func:`layerscope.analysis.runs.runner.execute` and stop cleanly on
Ctrl-C (:mod:`.cancellation`); ``devices`` lists what their ``--device`` takes. What ``check``
computes and compares is the analysis layer's profile (:mod:`layerscope.analysis.results.profiles`);
this module only asks for it and renders it. How a computation shows its progress is the
business of :mod:`.progress_bars` (a person, stderr) and :mod:`.progress_jsonl` (a program,
stdout), what it ran of :mod:`.outcome`.

Under torchrun, ``compute`` on rank 0 shows the same progress (over all ranks, from
:func:`layerscope.analysis.runs.distributed.execute`) and the other ranks serve it silently;
``compute --nproc-per-node N`` starts that job itself (:mod:`.torchrun`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.setting_schema import SettingError, Surface
from layerscope.app.cli import output
from layerscope.app.cli.arguments import PROG, UsageError, names, setting_values
from layerscope.app.cli.grammar import LAUNCHER_OPTIONS
from layerscope.app.cli.outcome import summary_lines
from layerscope.app.cli.progress_bars import execute_with_progress
from layerscope.app.cli.progress_jsonl import execute_jsonl
from layerscope.app.cli.torchrun import launch_ranks, serve_rank
from layerscope.app.settings_presentation import option_name

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunRequest


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
    from layerscope.analysis.models.inspection import has_chat_template

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


def cmd_compute(args: argparse.Namespace) -> int:
    from layerscope.analysis.runs.distributed import detect, replica_device
    from layerscope.analysis.runs.sharding import ShardError, parse_shard

    environment = detect()
    if args.nproc_per_node is not None:
        if args.dry_run:
            raise UsageError("--dry-run: runs in one process, not with --nproc-per-node")
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
    if args.dry_run:
        if environment is not None:
            raise UsageError("--dry-run: runs in one process, not under torchrun")
        from layerscope.app.cli.dry_run import dry_run

        return dry_run(request, args.db, args.progress_format == "jsonl", args.quiet)
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
