"""The command line's name and exit statuses, importable before anything else is.

Why a module of the standard library alone: :func:`layerscope.app.cli.main` must be able to end
with one line and status 130 when Ctrl-C comes while the command line's own modules (DuckDB,
Rich, the settings record) are still being imported, the first tenth of a second of every
command, before any of them could be asked for their constants.
"""

from __future__ import annotations

from typing import NoReturn

PROG = "layerscope"
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention; a SIGTERM exits 143


def finish(status: int) -> NoReturn:
    """End the process with ``status``; quickly after a computation.

    Why: once torch and transformers are imported, the interpreter's teardown of their modules
    takes 0.6-1.5 s on a 2-core machine, and longer with a large model's objects, after the
    work is done and said: quitting the explorer after a compute seemed to hang. When torch was
    imported and no other thread runs, the exit handlers run (``atexit``: ``weakref.finalize``
    clean-ups such as removing a device map's offloaded layers, logging, multiprocessing), the
    standard streams are flushed, and the process ends without the teardown. Otherwise (a
    browsing command, or a thread still running) it is an ordinary exit.
    """
    import sys
    import threading

    if "torch" not in sys.modules or threading.active_count() > 1:
        raise SystemExit(status)
    import atexit
    import contextlib
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing more can be said
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
