"""The ``layerscope`` command line: headless computing and browsing of the results cache.

Why headless: the computations run for hours on GPU servers, in tmux, over SSH; users start
them with ``layerscope compute``, look at results with ``runs``/``show`` from another terminal
while they run, and move numbers around with ``export``/``import``. ``layerscope`` alone opens
the Textual explorer (the only place this package touches the UI).

The package is thin: :mod:`.grammar` (every command and its options), :mod:`.arguments` (what
a value means, the computing options built from the settings record), :mod:`.computing`,
:mod:`.browsing`, :mod:`.publishing` (figure, table) and :mod:`.doctor` (one function per
command, calling ``analysis/``), :mod:`.output` (rendering); a computation's progress
(:mod:`.progress_bars`, :mod:`.progress_jsonl`), cancellation and torchrun launcher have modules
of their own.
Conventions every command keeps: ``--help``; ``--db`` (also before the command); loading stages
and progress bars on stderr for long work (stdout stays clean for scripts: run ids, tables, JSON;
``compute`` into a terminal shows each run once, as its summary line, see its ``--help``); exit
status 0 on success, 1 for a runtime error, 2 for a usage error, 70 for an internal error, 130
when interrupted (143 when stopped by SIGTERM); and every error is one line on stderr, never a
traceback: ``layerscope: error: ...`` for a layerscope error (a setting named by its option),
``layerscope: internal error: ... (traceback written to FILE)`` for anything else (a bug, a
failure inside torch: :mod:`layerscope.app.error_reports`). ``LAYERSCOPE_DEBUG=1`` lets the
error propagate instead. Browsing commands (runs, show, export, import) never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from layerscope.analysis.base.errors import LayerscopeError, is_internal, one_line
from layerscope.analysis.cache import ResultsCache
from layerscope.app.cli.arguments import EXIT_INTERRUPTED, PROG, UsageError
from layerscope.app.cli.grammar import build_parser
from layerscope.app.settings_presentation import option_name

__all__ = ["build_parser", "main"]

EXIT_RUNTIME = 1
EXIT_USAGE = 2

# Each command's function, "module:function" under layerscope.app.cli: a command imports only
# its own module (``runs`` needs none of compute's, doctor's or the figures' imports).
COMMANDS: dict[str, str | Callable[[argparse.Namespace], int]] = {
    "compute": "computing:cmd_compute",
    "runs": "browsing:cmd_runs",
    "show": "browsing:cmd_show",
    "export": "browsing:cmd_export",
    "import": "browsing:cmd_import",
    "describe": "browsing:cmd_describe",
    "check": "computing:cmd_check",
    "doctor": "doctor:cmd_doctor",
    "devices": "computing:cmd_devices",
    "figure": "publishing:cmd_figure",
    "table": "publishing:cmd_table",
    "select": "selecting:cmd_select",
    "correlations": "selecting:cmd_correlations",
    "merge": "merging:cmd_merge",
}
# Commands that only read the cache, briefly: their reads share one connection (opening the
# file costs about 20 ms of CPU each time). Exports read in chunks, each with its own short
# connection, so that a compute can store batches meanwhile; they are not here.
ONE_CONNECTION = frozenset({"runs", "show", "figure", "table", "select", "correlations"})


def command_function(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command ``name``, its module imported now."""
    handler = COMMANDS[name]
    if isinstance(handler, str):
        module, function = handler.split(":")
        handler = getattr(importlib.import_module(f"layerscope.app.cli.{module}"), function)
        assert callable(handler)
    return handler


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return status


def _internal(error: BaseException, argv: Sequence[str] | None) -> int:
    """A bug, or a failure beneath layerscope: said as one, its traceback kept in a file."""
    from layerscope.app.error_reports import EXIT_SOFTWARE, command_context, internal_error

    words = None if argv is None else list(argv)
    line = internal_error(error, command_context(words))
    print(f"{PROG}: internal error: {line}", file=sys.stderr)
    return EXIT_SOFTWARE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises, never prints a traceback
    unless LAYERSCOPE_DEBUG is set: an unexpected error's goes to a file)."""
    debug = bool(os.environ.get("LAYERSCOPE_DEBUG"))
    command: str | None = None
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # compute --nproc-per-node
        command = args.command
        if args.command is None:
            from layerscope.app.tui import run_tui

            return run_tui(model=args.model, dataset=args.dataset, db=args.db)
        run = command_function(args.command)
        if args.command in ONE_CONNECTION:
            with ResultsCache(args.db).session():
                return run(args)
        return run(args)
    except UsageError as error:
        return _fail(error.describe(option_name), EXIT_USAGE)
    except KeyboardInterrupt:
        if debug:
            raise
        if command in ("compute", "check"):
            return _fail(
                "interrupted; finished batches are stored, run again to resume", EXIT_INTERRUPTED
            )
        if command == "merge":  # one transaction per run
            return _fail(
                "interrupted; the runs merged so far are kept, run the same merge to continue",
                EXIT_INTERRUPTED,
            )
        # Exports publish a file only when complete, imports store a run whole or not at all.
        return _fail("interrupted; nothing was changed", EXIT_INTERRUPTED)
    except Exception as error:
        if debug:
            raise
        if is_internal(error):
            return _internal(error, argv)
        if isinstance(error, OSError) and error.filename:  # a file the user named
            return _fail(f"{error.filename}: {error.strerror or error}", EXIT_RUNTIME)
        if isinstance(error, LayerscopeError):
            return _fail(error.describe(option_name), EXIT_RUNTIME)
        return _fail(one_line(error), EXIT_RUNTIME)  # an OSError of no file: a full disk
