"""Which runs a live process is computing, told by locks the operating system drops when the
process ends.

Why not the PID stored with the run: a PID outlives its process. A compute killed in one
container left its PID in the cache; in the next container an unrelated process had that PID,
and the run could never be resumed ("being computed by PID 3 right now") while doctor called
the cache healthy. A dead process cannot keep a lock: the kernel drops every record lock of a
process when it ends, however it ends (killed, out of memory, its container gone).

How: beside the cache file, ``<name>.live``, empty and never removed (the locks are byte ranges,
which need no bytes in the file). The process computing a run holds an exclusive lock on one
byte chosen by the run's id (:func:`claim_run`, from ``begin_run`` until the run is finished)
and, while it computes any run, a shared lock on byte 0: ``doctor`` asks byte 0 whether a writer
is live, so that the write-ahead log of a live compute is not mistaken for damage. Anyone asks
by trying for the lock without waiting (and letting go at once), so asking never blocks. Record
locks belong to the process, and closing any descriptor of the file drops all of the process's
locks on it: each process keeps one descriptor per lock file open for as long as it lives, asks
through it, and never asks about a byte it holds (it knows). A claim tried while another
process asks (holding the byte for an instant) is tried again for a moment before it is refused.

:func:`computing` is the one rule every reader applies (``runs``, a compute about to resume,
``merge``, ``doctor``). Where the locks cannot be had (no ``fcntl``; a folder that cannot be
written and no lock file yet), the answer is ``Claim.UNKNOWN``, and the callers fall back on the
stored PID as before.
Runs begun by a layerscope older than these locks hold none: while such a compute still runs,
its run reads as interrupted to this version.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the stored PID decides (UNKNOWN below)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Claim",
    "claim_run",
    "computing",
    "ensure_lock_file",
    "live_path",
    "release_run",
    "run_claim",
    "writer_is_live",
]

# A claim tried while another process asks about the same byte (an instant) is retried for
# this long before the run is called taken.
_CLAIM_PATIENCE_SECONDS = 0.5
_WRITERS = 0  # the byte a process computing any run holds shared


class Claim(enum.Enum):
    """What the locks say of a run (or of the writers of a cache)."""

    HELD = "held"  # a live process computes it (this one or another)
    FREE = "free"  # no live process does
    UNKNOWN = "unknown"  # the locks cannot be had here: ask the stored PID


def live_path(db: Path) -> Path:
    """The lock file of the cache ``db``."""
    return db.with_name(db.name + ".live")


def _offset(run_id: str) -> int:
    """The byte of a run: 1 to 2^40 by its id (byte 0 is the writers')."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=5).digest()
    return 1 + int.from_bytes(digest, "big")


@dataclass
class _LockFile:
    """This process's descriptor of one lock file, and the bytes it holds there."""

    descriptor: int
    writable: bool
    held: set[int] = field(default_factory=set)


_FILES: dict[str, _LockFile | None] = {}
_GUARD = threading.Lock()


def _lock_file(db: Path, create: bool) -> _LockFile | None:
    """The process's open lock file of ``db`` (opened once, never closed: see the module
    docstring); None when locks cannot be had."""
    if fcntl is None:
        return None
    key = str(live_path(db).resolve())
    known = _FILES.get(key)
    if known is not None:
        return known
    path = live_path(db)
    opened: _LockFile | None = None
    with contextlib.suppress(OSError):
        flags = os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        opened = _LockFile(os.open(path, flags | (os.O_CREAT if create else 0), 0o666), True)
    if opened is None:
        with contextlib.suppress(OSError):
            flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
            opened = _LockFile(os.open(path, flags), False)
    if opened is not None:
        _FILES[key] = opened
    return opened


def _try(file: _LockFile, offset: int, exclusive: bool) -> bool:
    """Take the lock on byte ``offset`` without waiting; whether it was had."""
    assert fcntl is not None
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.lockf(file.descriptor, mode | fcntl.LOCK_NB, 1, offset)
    except OSError:
        return False
    return True


def _let_go(file: _LockFile, offset: int) -> None:
    assert fcntl is not None
    fcntl.lockf(file.descriptor, fcntl.LOCK_UN, 1, offset)


def claim_run(db: Path, run_id: str) -> bool | None:
    """Take the run for this process: True when it holds it now (or held it already), False
    when another live process holds it, None when locks cannot be had here. The run's byte and
    the writers' byte stay held until :func:`release_run` or the end of the process."""
    with _GUARD:
        file = _lock_file(db, create=True)
        if file is None or not file.writable:
            return None
        offset = _offset(run_id)
        if offset in file.held:
            return True
        deadline = time.monotonic() + _CLAIM_PATIENCE_SECONDS
        while not _try(file, offset, exclusive=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        if not file.held and not _try(file, _WRITERS, exclusive=False):
            # a doctor asking holds byte 0 for an instant: wait it out like a claim
            while not _try(file, _WRITERS, exclusive=False):
                if time.monotonic() >= deadline:
                    _let_go(file, offset)
                    return None
                time.sleep(0.01)
        file.held.add(offset)
        return True


def release_run(db: Path, run_id: str) -> None:
    """Let go of the run (its compute ended); of the writers' byte with the last run."""
    with _GUARD:
        file = _FILES.get(str(live_path(db).resolve()))
        offset = _offset(run_id)
        if file is None or offset not in file.held:
            return
        file.held.discard(offset)
        _let_go(file, offset)
        if not file.held:
            _let_go(file, _WRITERS)


def run_claim(db: Path, run_id: str) -> Claim:
    """Whether a live process (this one included) computes the run: ``HELD``, ``FREE`` or
    ``UNKNOWN`` (no lock file: nothing was ever computed with these locks, or no locks here)."""
    with _GUARD:
        file = _lock_file(db, create=False)
        if file is None:
            return Claim.UNKNOWN
        offset = _offset(run_id)
        if offset in file.held:
            return Claim.HELD
        if not _try(file, offset, exclusive=False):
            return Claim.HELD
        _let_go(file, offset)
        return Claim.FREE


def writer_is_live(db: Path) -> Claim:
    """Whether a live process is computing into the cache ``db`` (this one included)."""
    with _GUARD:
        file = _lock_file(db, create=False)
        if file is None or not file.writable:
            return Claim.UNKNOWN
        if file.held:
            return Claim.HELD
        if not _try(file, _WRITERS, exclusive=True):
            return Claim.HELD
        _let_go(file, _WRITERS)
        return Claim.FREE


def computing(
    db: Path, run_id: str, status: str, owner_pid: int | None, owner_host: str | None
) -> bool | None:
    """Whether a live process computes this run of the cache ``db`` (its stored status and
    owner given): True, False, or None when this host cannot tell (a run of another host that
    holds no lock seen here: its PID says nothing on this host)."""
    if status != "running" or owner_pid is None:
        return False
    claim = run_claim(db, run_id)
    if claim is Claim.HELD:
        return True
    if owner_host is not None and owner_host != socket.gethostname():
        return None
    if claim is Claim.FREE:
        return False
    return owner_pid == os.getpid() or _pid_alive(owner_pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (where no lock can tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def ensure_lock_file(db: Path) -> bool:
    """Create the lock file of ``db`` if it has none (``doctor --repair``): from then on a run
    is being computed only while a process holds its lock, and a claim by a stored PID alone
    (which an unrelated process may have now) no longer counts. True when it was created."""
    path = live_path(db)
    if path.exists() or fcntl is None:
        return False
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.close(os.open(path, flags, 0o666))
    except FileExistsError:
        return False
    return True
