"""An unexpected error, reported: one line for the person, its traceback kept in a file.

Why a file: the command line promises one line on stderr for every error (a traceback would bury
an hours-long job's log, and the explorer has no terminal to print one to), yet a bug in
layerscope or a failure inside torch must not read like the user's mistake, and must be
reportable. So an error that is not a :class:`~layerscope.analysis.base.errors.LayerscopeError`
(:func:`~layerscope.analysis.base.errors.is_internal`) is said as an internal error, and its full
traceback (with the errors it was raised from) goes to a file the line names.

Where: ``$XDG_STATE_HOME/layerscope/internal-errors/`` (``~/.local/state/...`` by default), the
XDG folder for what a program keeps between runs that is neither configuration nor data, such as
logs. Unlike a temporary folder it outlives the job (a cluster node's ``/tmp`` is cleaned when
the job ends), and unlike the results cache's folder it is never shared with other users (a
traceback shows paths and arguments). Where that folder cannot be written, the system's temporary
folder takes the file.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from layerscope.analysis.base.errors import LayerscopeError, one_line

__all__ = [
    "EXIT_SOFTWARE",
    "command_context",
    "internal_error",
    "traceback_folder",
    "traceback_note",
    "write_traceback",
]

EXIT_SOFTWARE = 70  # sysexits.h: an internal software error


def traceback_folder() -> Path:
    """``$XDG_STATE_HOME/layerscope/internal-errors``, ``~/.local/state/...`` by default."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "layerscope" / "internal-errors"


def _version() -> str:
    try:  # importlib.metadata alone: the failure may be in layerscope's own imports
        return version("layerscope")
    except PackageNotFoundError:
        return "(version unknown)"


def _report(error: BaseException, context: str) -> str:
    head = [
        f"layerscope {_version()}, Python {platform.python_version()} on {platform.platform()}",
        f"at {time.strftime('%Y-%m-%d %H:%M:%S %z')}, process {os.getpid()}",
    ]
    if context:
        head.append(context)
    return "\n".join(head) + "\n\n" + "".join(traceback.format_exception(error))


def write_traceback(error: BaseException, context: str = "") -> Path | None:
    """Write ``error``'s traceback (and what it was raised from) to a new file; its path, or
    None when neither the traceback folder nor the temporary folder can take it. ``context``
    (the command line, the explorer's request) heads the file."""
    text = _report(error, context)
    prefix = f"internal-error-{time.strftime('%Y%m%d-%H%M%S')}-"
    folders = [traceback_folder(), Path(tempfile.gettempdir())]
    for folder in folders:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=folder)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError:
            continue
        return Path(name)
    return None


# The notes of the failures written so far, by what they are and where they were raised: the
# explorer meets a bug in a view on every redraw, and one file of it is enough.
_WRITTEN: dict[tuple[str, str, str], str] = {}


def _failure(error: BaseException) -> tuple[str, str, str]:
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return type(error).__qualname__, one_line(error), where


def traceback_note(error: BaseException, context: str = "") -> str:
    """Write ``error``'s traceback (once per process for a failure that repeats); "traceback
    written to FILE", or that none could be."""
    failure = _failure(error)
    if failure in _WRITTEN:
        return _WRITTEN[failure]
    path = write_traceback(error, context)
    if path is None:
        return "no file could take its traceback"
    _WRITTEN[failure] = note = f"traceback written to {path}"
    return note


def internal_error(error: BaseException, context: str = "") -> str:
    """``error`` as one line, its traceback written: "RuntimeError: boom (traceback written to
    FILE)". A layerscope error that only says where the failure happened keeps its own line
    (its cause is in the file)."""
    if isinstance(error, LayerscopeError):
        line = one_line(error)
    else:
        line = one_line(error, with_type=True)
    return f"{line} ({traceback_note(error, context)})"


def command_context(argv: list[str] | None = None) -> str:
    """The command line, for the head of a traceback file."""
    words = sys.argv[1:] if argv is None else argv
    return "command: layerscope " + " ".join(words)
