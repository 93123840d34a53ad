"""The cache's errors: what a caller of the cache catches, each one line naming the file.

Why a module of their own: they are raised by every part of the cache (opening the file and
checking its log, reading its schema version, looking a run up, merging, ``layerscope doctor``)
and caught by every front end, so they belong to none of those parts; the modules that raise
them import them from here without importing each other. The facade
(:mod:`layerscope.analysis.cache`) re-exports the ones its callers catch.
"""

from __future__ import annotations

from layerscope.analysis.base.errors import LayerscopeError

__all__ = [
    "CacheError",
    "CacheLockedError",
    "DamagedLogError",
    "SchemaVersionError",
    "UnknownRunError",
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
