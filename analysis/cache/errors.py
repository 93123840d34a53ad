"""The cache's errors: what a caller of the cache catches, each one line naming the file.

Why a module of their own: they are raised by every part of the cache (opening the file and
checking its log, reading its schema version, looking a run up, merging, ``layerscope doctor``)
and caught by every front end, so they belong to none of those parts; the modules that raise
them import them from here without importing each other. The facade
(:mod:`layerscope.analysis.cache`) re-exports the ones its callers catch.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from layerscope.analysis.base.errors import LayerscopeError

__all__ = [
    "CacheError",
    "CacheLockedError",
    "DamagedLogError",
    "SchemaVersionError",
    "StorageError",
    "UnknownRunError",
    "refused_storage",
    "storage_errno",
]


class CacheError(LayerscopeError, RuntimeError):
    """The cache file cannot be used; the message is one line and names the file."""


class CacheLockedError(CacheError):
    """Another process kept the cache file locked for longer than the lock timeout."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class SchemaVersionError(CacheError):
    """The cache file was written by a newer layerscope (or is not a layerscope cache)."""


class DamagedLogError(CacheError):
    """The file's write-ahead log cannot be replayed; the message says how to set it aside."""


class UnknownRunError(CacheError, KeyError):
    """No run (or more than one) matches the given id or id prefix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# The disk's refusals: nothing more can be written there until someone acts, so a writer stops
# at once instead of retrying (each: what is wrong, what to do).
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space"),
    errno.EROFS: ("the disk is read-only", "make it writable"),
    errno.EIO: ("the disk failed a write", "check the disk"),
}


class StorageError(CacheError):
    """The disk holding the cache file refused a write (full, over quota, read-only, failing):
    nothing more can be stored there until someone acts. ``errno`` says which, ``folder`` is
    the cache file's folder; the message says both and what to do, ending with ``then``."""

    def __init__(self, number: int, folder: Path, then: str = "and try again") -> None:
        self.errno = number
        self.folder = folder
        what, act = _STORAGE_ERRNOS[number]
        super().__init__(f"{what}: cannot write to {folder} ({os.strerror(number)}); {act} {then}")

    def then(self, then: str) -> StorageError:
        """The same refusal, ending with what the caller's user does next."""
        return StorageError(self.errno, self.folder, then)


def storage_errno(error: BaseException) -> int | None:
    """The errno of the disk's refusal behind ``error`` (see ``_STORAGE_ERRNOS``), or None.

    Looks along the chain of causes: an ``OSError`` with one of those errnos, or a message with
    its words (DuckDB says "No space left on device" in an ``IOException`` or a fatal error,
    and the cache's one-line error keeps those words).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current.errno
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current.errno
        text = str(current).lower()
        for number in _STORAGE_ERRNOS:
            if os.strerror(number).lower() in text:
                return number
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def refused_storage(path: Path) -> Iterator[None]:
    """A write to the cache file ``path``: a refusal of its disk raised as :class:`StorageError`
    (naming the file's folder) instead of the cache error it came as (an ``OSError`` passes:
    inside a write it is the caller's, reading its own input)."""
    try:
        yield
    except StorageError:
        raise
    except CacheError as error:
        number = storage_errno(error)
        if number is None:
            raise
        raise StorageError(number, path.absolute().parent) from error
