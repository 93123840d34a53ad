"""The command line's name and exit statuses, importable before anything else is.

Why a module of the standard library alone: :func:`layerscope.app.cli.main` must be able to end
with one line and status 130 when Ctrl-C comes while the command line's own modules (DuckDB,
Rich, the settings record) are still being imported, the first tenth of a second of every
command, before any of them could be asked for their constants.
"""

from __future__ import annotations

PROG = "layerscope"
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention; a SIGTERM exits 143
