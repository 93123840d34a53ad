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

Why this module imports nothing but the standard library at its top: Ctrl-C can come at any
moment, the first tenth of a second included, while DuckDB, Rich and the settings record are
being imported; :func:`main` imports them inside its own handler, so that an interrupt there too
ends with one line and status 130, never a traceback. DuckDB answers a Ctrl-C during a query with
an error of its own instead of the KeyboardInterrupt; :func:`main` says it as an interrupt too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from layerscope.app.cli.exits import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, PROG

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["build_parser", "main", "run"]

# Each command's function, "module:function" under layerscope.app.cli: a command imports only
# its own module (``runs`` needs none of compute's, doctor's or the figures' imports).
COMMANDS: dict[str, str | Callable[[argparse.Namespace], int]] = {
    "compute": "computing:cmd_compute",
    "runs": "browsing:cmd_runs",
    "show": "browsing:cmd_show",
    "export": "browsing:cmd_export",
    "import": "browsing:cmd_import",
    "describe": "browsing:cmd_describe",
    "check": "checking:cmd_check",
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

# What an interrupted command leaves, said after "interrupted; ".
KEPT_WHEN_INTERRUPTED = {
    "compute": "finished batches are stored, run again to resume",
    "check": "finished batches are stored, run again to resume",
    # one transaction per run
    "merge": "the runs merged so far are kept, run the same merge to continue",
    # one transaction: a run whole or not at all
    "import": "nothing was imported",
}
# Exports publish a file only when complete; the other commands only read.
NOTHING_CHANGED = "nothing was changed"

# The tests' Ctrl-C at a chosen moment: LAYERSCOPE_TEST_INTERRUPT=import (before the command
# line's modules are imported), parse (before the arguments are parsed) or run (before the
# command's function runs) makes :func:`main` send SIGINT to its own process at that point.
TEST_INTERRUPT = "LAYERSCOPE_TEST_INTERRUPT"


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar (:func:`layerscope.app.cli.grammar.build_parser`)."""
    from layerscope.app.cli.grammar import build_parser as grammar

    return grammar()


def command_function(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command ``name``, its module imported now."""
    import importlib

    handler = COMMANDS[name]
    if isinstance(handler, str):
        module, function = handler.split(":")
        handler = getattr(importlib.import_module(f"layerscope.app.cli.{module}"), function)
        assert callable(handler)
    return handler


def is_interruption(error: BaseException) -> bool:
    """Whether ``error`` is how a Ctrl-C surfaced: a KeyboardInterrupt, or DuckDB's word for one.

    DuckDB checks for signals while it runs a query and fails the query instead of letting the
    KeyboardInterrupt through: ``RuntimeError('Query interrupted')`` from its Python client (the
    message is all that tells it apart), ``duckdb.InterruptException`` when a connection is
    interrupted. The cache wraps DuckDB's errors in its own (``raise ... from None`` keeps the
    original as the context), so the errors this one was raised from count too.
    """
    duckdb = sys.modules.get("duckdb")  # not imported: no DuckDB error can have been raised
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        if duckdb is not None and isinstance(current, duckdb.InterruptException):
            return True
        if type(current) is RuntimeError and str(current) == "Query interrupted":
            return True
        current = current.__cause__ or current.__context__
    return False


def _say(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _signal_status(error: BaseException) -> int:
    """The exit status an interruption asks for: a signal's (143 for SIGTERM) when it stopped
    the command before its first batch, else 130 (Ctrl-C)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(current, "exit_status", None)
        if isinstance(current, KeyboardInterrupt) and isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return EXIT_INTERRUPTED


def _interrupted(command: str | None, status: int = EXIT_INTERRUPTED) -> int:
    """Say in one line what an interrupted command left, and return ``status`` (130). A second
    Ctrl-C while the line is written is ignored (it would add a traceback under it)."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    # None: a handler set outside Python, which cannot be put back; left as it is.
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    if previous is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _say(f"interrupted; {KEPT_WHEN_INTERRUPTED.get(command or '', NOTHING_CHANGED)}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return status


def _failed(error: Exception, argv: Sequence[str] | None) -> int:
    """The exit status of a command that raised ``error``, said in one line."""
    from layerscope.analysis.base.errors import LayerscopeError, is_internal, one_line
    from layerscope.app.cli.arguments import UsageError
    from layerscope.app.settings_presentation import option_name

    if isinstance(error, UsageError):
        _say(one_line(error.describe(option_name)))
        return EXIT_USAGE
    if is_internal(error):
        # A bug, or a failure beneath layerscope: said as one, its traceback kept in a file.
        from layerscope.app.error_reports import EXIT_SOFTWARE, command_context, internal_error

        words = None if argv is None else list(argv)
        line = internal_error(error, command_context(words))
        print(f"{PROG}: internal error: {line}", file=sys.stderr)
        return EXIT_SOFTWARE
    if isinstance(error, OSError) and error.filename:  # a file the user named
        _say(one_line(f"{error.filename}: {error.strerror or error}"))
    elif isinstance(error, LayerscopeError):
        _say(one_line(error.describe(option_name)))
    else:
        _say(one_line(error))  # an OSError of no file: a full disk
    return EXIT_RUNTIME


def run() -> NoReturn:
    """The ``layerscope`` command: :func:`main`, then the process ends (quickly after a
    computation; see :func:`~layerscope.app.cli.exits.finish`)."""
    from layerscope.app.cli.exits import finish

    finish(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises, never prints a traceback
    unless LAYERSCOPE_DEBUG is set: an unexpected error's goes to a file)."""
    test_interrupt = os.environ.get(TEST_INTERRUPT, "")
    debug = bool(os.environ.get("LAYERSCOPE_DEBUG"))
    command: list[str] = []  # the command, once parsed: what an interrupt says was kept
    try:
        try:
            return _run(argv, command, test_interrupt)
        except Exception as error:
            if debug:
                raise
            if is_interruption(error):
                return _interrupted(command[0] if command else None, _signal_status(error))
            return _failed(error, argv)
    except KeyboardInterrupt as interrupt:  # while running, or while saying why it failed
        if debug:
            raise
        # a signal before the first batch stops at once with its own status (143: SIGTERM)
        return _interrupted(command[0] if command else None, _signal_status(interrupt))


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then raise it as a KeyboardInterrupt; a second
    Ctrl-C meanwhile interrupts at once.

    For imports, where a KeyboardInterrupt raised at an arbitrary point is not always one:
    DuckDB's extension aborts the whole process ("Critical nanobind error") when it lands while
    the extension makes its enums, or turns it into an ImportError; one that lands in a weak
    reference's callback inside the import machinery is printed as "Exception ignored" and
    lost. Held, it is raised here once the imports are done, a fraction of a second later.
    """
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        # Ignored (a job started with `&` by a script, nohup) or another's handler: as it is.
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _run(argv: Sequence[str] | None, command: list[str], test_interrupt: str) -> int:
    """Import, parse and run: everything :func:`main` guards."""

    def moment(phase: str) -> None:
        if test_interrupt != phase:
            return
        if phase == "run":
            # From code run as a string, as when Ctrl-C lands in a dataclass being made while
            # the command imports torch or transformers (see __main__ for why that matters).
            exec("import signal; signal.raise_signal(signal.SIGINT)")
            return
        import signal

        signal.raise_signal(signal.SIGINT)

    with _interrupts_held():
        moment("import")
        from layerscope.analysis.cache import ResultsCache
        from layerscope.app.cli.grammar import build_parser as grammar

    moment("parse")
    args = grammar().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # compute --nproc-per-node
    if args.command is None:
        with _interrupts_held():
            from layerscope.app.tui import run_tui

        moment("run")
        return run_tui(model=args.model, dataset=args.dataset, db=args.db)
    with _interrupts_held():
        run = command_function(args.command)
    command.append(args.command)
    moment("run")
    if args.command in ONE_CONNECTION:
        with ResultsCache(args.db).session():
            return run(args)
    return run(args)
