"""Writing an export where the user asked without ever destroying something by accident.

Why one module: an export is where layerscope writes to a path a user typed, and a user trial
showed how that goes wrong: ``--output`` naming the cache itself (every run lost), an existing
file replaced without a word, a symbolic link replaced by a regular file, ``/dev/stdout``
replaced by a file (as root). Every export writer (the tables of
:mod:`layerscope.analysis.cache.exports`, the paper's JSON lines of
:mod:`layerscope.analysis.interchange.paper_export`) opens its destination with :func:`open_output`, so
these rules hold for all of them:

* **Protected files** (the cache and its write-ahead log, see ``ResultsCache.files``) are
  refused, ``force`` or not: by file identity (device and inode, so a hard link or a symbolic
  link to one is caught, whatever its name) and by resolved name (a log that does not exist yet
  would be read as one by the next open).
* **An existing file** is replaced only with ``force``. A symbolic link stays a link: its
  target is replaced.
* **A device or a FIFO** (``/dev/null``, ``/dev/stdout`` on a terminal or a pipe) is written
  straight into, since that is what naming one means; nothing is created or renamed.
* **Standard output** is :data:`STDOUT`, the string ``"-"`` (``Path("-")`` is a file named -),
  written as the shell opened it. A path that reaches this process's stdout or stderr when that
  is a file (``--output /dev/stdout >> log``) is refused and pointed to ``-``: replacing the file
  or writing it from its start would lose what was there.
* **A file** is written to a hidden partial file beside it, created exclusively
  (``O_CREAT | O_EXCL | O_NOFOLLOW``: nothing planted at that name is followed or reused; mode
  0o644 less the umask, or the replaced file's mode), flushed to disk and only then renamed over
  the target; without ``force`` it is hard-linked instead, which fails if a file of that name
  appeared meanwhile. A reader sees the old file or the whole new one, never half. Any failure,
  KeyboardInterrupt included, removes the partial file.

A process killed outright (SIGKILL, a power cut) cannot clean up: it leaves its partial file,
``.NAME.<pid>.<random>.partial``. The name is unique, so it never blocks a later export, and the
next export to the same name removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from layerscope.analysis.base.errors import LayerscopeError

__all__ = [
    "STDOUT",
    "Destination",
    "OutputError",
    "OutputExistsError",
    "check_destination",
    "is_stdout",
    "open_output",
]

STDOUT = "-"
_STDOUT_NAME = "- (standard output)"
Protected = Mapping[Path, str]  # file -> what it is, for messages ("the results cache")

_PARTIAL_SUFFIX = ".partial"
_TOKEN = re.compile(r"[0-9a-f]{8}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


class OutputError(LayerscopeError, RuntimeError):
    """An export's destination is refused or cannot be written; one line naming it."""


class OutputExistsError(OutputError):
    """The destination exists and replacing it was not asked for (``force``)."""


@dataclass(frozen=True)
class Destination:
    """Where an export goes, once checked (see :func:`check_destination`)."""

    kind: Literal["stdout", "stream", "file"]
    named: str  # what the user named, for messages
    path: Path | None = None  # the file written: a link's target; None for standard output
    replaces: os.stat_result | None = None  # the existing file replaced (its mode is kept)


def is_stdout(path: Path | str) -> bool:
    """Whether ``path`` means standard output: the string ``"-"``, not a ``Path``."""
    return isinstance(path, str) and path == STDOUT


def _token() -> str:
    """The random part of a partial file's name."""
    return secrets.token_hex(4)


def _stat(path: Path | str, *, follow: bool) -> os.stat_result | None:
    """The file's status, None where nothing (or no folder) is there."""
    try:
        return os.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _standard_stream(name: Literal["stdout", "stderr"]) -> os.stat_result | None:
    """The file behind this process's stdout or stderr; None where there is none (a test's
    capture in memory)."""
    try:
        return os.fstat(getattr(sys, name).fileno())
    except (OSError, ValueError):
        return None


def _refuse_protected(
    named: str, resolved: str | None, status: os.stat_result | None, protected: Protected
) -> None:
    """Refuse a destination that is a protected file: the same resolved name (``resolved``) or
    the same device and inode as the file found there (``status``)."""
    for path, what in protected.items():
        same = resolved is not None and os.path.realpath(path) == resolved
        if not same and status is not None:
            found = _stat(path, follow=True)
            same = found is not None and _same_file(found, status)
        if same:
            where = "" if named == str(path) else f" ({path})"
            raise OutputError(f"{named} is {what}{where}; an export never writes over it")


def _check_folder(named: str, folder: Path) -> None:
    found = _stat(folder, follow=True)
    if found is None:
        raise OutputError(f"{named}: folder {folder} does not exist")
    if not stat.S_ISDIR(found.st_mode):
        raise OutputError(f"{named}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{named}: folder {folder} is not writable")


def check_destination(
    path: Path | str, protected: Protected, *, force: bool = False
) -> Destination:
    """What writing ``path`` would do, or :class:`OutputError` saying why it must not.

    Cheap: exporters call it before any work, and :func:`open_output` again when it opens.
    """
    if is_stdout(path):
        status = _standard_stream("stdout")
        _refuse_protected(_STDOUT_NAME, None, status, protected)  # `--output - >> cache`
        return Destination("stdout", _STDOUT_NAME)
    if str(path) == "":
        raise OutputError("the output path is empty; give a file name")
    target = Path(path).expanduser()
    named = str(target)
    try:
        link = _stat(target, follow=False)
        found = _stat(target, follow=True) if link is not None else None
    except OSError as error:  # a loop of links, a folder that cannot be searched
        raise OutputError(f"{named}: {error.strerror or error}") from None
    _refuse_protected(named, os.path.realpath(target), found, protected)
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise OutputError(f"{named} is a folder; give a file name")
    if found is not None and not stat.S_ISREG(found.st_mode):
        return Destination("stream", named, target)
    for stream in ("stdout", "stderr"):  # /dev/stdout with stdout redirected to a file
        status = _standard_stream(stream)
        if found is not None and status is not None and _same_file(found, status):
            raise OutputError(f"{named} is this process's {stream}, a file: use - for stdout")
    is_link = link is not None and stat.S_ISLNK(link.st_mode)
    if link is not None and not force:
        what = f" (a symbolic link to {os.readlink(target)})" if is_link else ""
        raise OutputExistsError(f"{named} exists{what}")
    final = Path(os.path.realpath(target)) if is_link else target
    _check_folder(named, final.parent)
    return Destination("file", named, final, found)


@contextlib.contextmanager
def open_output(
    path: Path | str, protected: Protected, *, force: bool = False
) -> Iterator[BinaryIO]:
    """A binary stream to write an export to, published only when the block ends without an
    error (see the module documentation for the rules); errors are :class:`OutputError`."""
    destination = check_destination(path, protected, force=force)
    try:
        if destination.kind == "stdout":
            sys.stdout.flush()
            try:
                yield sys.stdout.buffer
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                raise OutputError(f"{_STDOUT_NAME} was closed before the end (a pipe)") from None
        elif destination.kind == "stream":
            with _open_stream(destination, protected) as handle:
                yield handle
        else:
            with _replacing(destination, force) as handle:
                yield handle
    except OSError as error:
        raise OutputError(f"{destination.named}: {error.strerror or error}") from None


@contextlib.contextmanager
def _open_stream(destination: Destination, protected: Protected) -> Iterator[BinaryIO]:
    """A device or FIFO, opened as it is: no creating, no truncating, no renaming."""
    assert destination.path is not None
    fd = os.open(destination.path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as handle:
        opened = os.fstat(fd)
        _refuse_protected(destination.named, None, opened, protected)
        if stat.S_ISREG(opened.st_mode):  # it was replaced by a file since it was checked
            raise OutputError(f"{destination.named} changed while being opened; try again")
        yield handle


@contextlib.contextmanager
def _replacing(destination: Destination, force: bool) -> Iterator[BinaryIO]:
    """A partial file beside the target, renamed over it at the end (removed on failure)."""
    final = destination.path
    assert final is not None
    _remove_stale_partials(final)
    partial = final.with_name(f".{final.name}.{os.getpid()}.{_token()}{_PARTIAL_SUFFIX}")
    try:
        fd = os.open(partial, _CREATE, 0o644)
    except FileExistsError:
        raise OutputError(
            f"{destination.named}: the partial file {partial} is already there; nothing written"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if destination.replaces is not None:
                os.fchmod(fd, stat.S_IMODE(destination.replaces.st_mode))
            yield handle
            handle.flush()
            os.fsync(fd)
        _publish(partial, final, replace=force, named=destination.named)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _sync_folder(final.parent)


def _publish(partial: Path, final: Path, *, replace: bool, named: str) -> None:
    """Give the partial file its final name: replacing what is there only when asked to."""
    if replace:
        os.replace(partial, final)
        return
    try:
        os.link(partial, final)
    except FileExistsError:
        raise OutputExistsError(f"{named} exists (it appeared during the export)") from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(final):  # a file system without hard links: check, then rename
            raise OutputExistsError(f"{named} exists (it appeared during the export)") from None
        os.replace(partial, final)
        return
    os.unlink(partial)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _remove_stale_partials(final: Path) -> None:
    """Remove partial files of ``final``'s name left by exports that were killed outright."""
    prefix = f".{final.name}."
    with contextlib.suppress(OSError), os.scandir(final.parent) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(_PARTIAL_SUFFIX)):
                continue
            pid, _, token = name[len(prefix) : -len(_PARTIAL_SUFFIX)].partition(".")
            if not pid.isdigit() or not _TOKEN.fullmatch(token) or _process_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
