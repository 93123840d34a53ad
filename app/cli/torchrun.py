"""``compute`` on several ranks: starting torchrun for ``--nproc-per-node N``, and serving on a
rank other than 0.

Why its own module: it is about processes, not about what is computed. The launcher splits the
command line into torchrun's options and the ranks' (the same command, less torchrun's
options), starts torchrun in its own session and passes it Ctrl-C and SIGTERM; a rank other than
0 computes what rank 0 hands out and prints nothing (rank 0 shows the progress of the whole
job, through the same progress output as one process).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from layerscope.app.cli.arguments import UsageError
from layerscope.app.cli.cancellation import Cancellation
from layerscope.app.cli.grammar import LAUNCHER_OPTIONS, build_parser

if TYPE_CHECKING:
    from layerscope.analysis.runs.runner import RunRequest


def launcher_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``compute --nproc-per-node N ...`` as torchrun's options and the ranks' command line
    (the same, less torchrun's options); UsageError when the two cannot be told apart."""
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

    with Cancellation(announce=False, at_once_while_loading=False) as cancellation:
        try:
            serve(request, cancellation.event)
        except KeyboardInterrupt:
            return cancellation.exit_status  # rank 0 tells the user
    return cancellation.exit_status if cancellation.event.is_set() else 0
