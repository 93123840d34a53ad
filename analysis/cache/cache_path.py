"""What is at a cache path, checked before DuckDB is given it: a DuckDB file, nothing, or what else.

Why before opening: DuckDB sniffs what it is handed. A SQLite file makes it fetch an extension
from the network (layerscope never downloads anything), a CSV file gives a catalog error about
an in-memory database, a FIFO blocks the open forever, and a write to a path that held another
kind of file would overwrite it. So every open first looks at the path here: nothing there (a
new cache may be created), a regular file with DuckDB's mark in its header, or one line saying
what the path is instead. An empty file is refused too: DuckDB cannot open it, and it may be a
cache cut short by a full disk that a user wants to look at before it is replaced.
"""

from __future__ import annotations

import stat
from pathlib import Path

from layerscope.analysis.cache.errors import CacheError

__all__ = ["check_cache_path"]

_DUCKDB_MARK = (8, b"DUCK")  # offset and bytes of DuckDB's mark in a database file's header
_SNIFFED_HEAD = 4096
_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_MAGIC = (
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "a gzip file"),
    (b"PK\x03\x04", "a zip file"),
    (b"\x93NUMPY", "a NumPy file"),
)
_TEXT_KINDS = {
    ".csv": "a CSV file",
    ".tsv": "a TSV file",
    ".json": "a JSON file",
    ".jsonl": "a JSON lines file",
}


def _content_kind(path: Path, head: bytes) -> str:
    """What a file that is not a DuckDB database looks like, from its first bytes and name."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    text = head.decode("utf-8", errors="replace")
    if "\x00" in text or text.count("\ufffd") > 3:
        return "a file of another format"
    by_name = _TEXT_KINDS.get(path.suffix.lower())
    if by_name is not None:
        return by_name
    if text.lstrip()[:1] in ("{", "["):
        return "a JSON file"
    return "a text file"


def check_cache_path(path: Path) -> bool:
    """Whether a DuckDB file is at ``path``; False when nothing is there (a dangling symbolic
    link included: a write creates the file it names). Anything else is a :class:`CacheError`
    saying what it is (see the module documentation); a FIFO is never opened."""
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        raise CacheError(f"{path}: cannot be examined: {error.strerror or error}") from None
    if stat.S_ISDIR(found.st_mode):
        shown = path if path.is_absolute() else f"{path} ({path.absolute()})"
        raise CacheError(
            f"{shown} is a folder, not a cache file: give --db (or $LAYERSCOPE_DB) a file name"
        )
    if not stat.S_ISREG(found.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(found.st_mode)), "not a regular file")
        raise CacheError(f"{path} is not a layerscope cache (not a DuckDB file): it is {kind}")
    if found.st_size == 0:
        raise CacheError(
            f"{path} is an empty file, not a layerscope cache (not a DuckDB file): remove it to "
            "start a new cache there, or use another file"
        )
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFFED_HEAD)
    except OSError as error:
        raise CacheError(f"{path}: cannot be read: {error.strerror or error}") from None
    offset, mark = _DUCKDB_MARK
    if head[offset : offset + len(mark)] == mark:
        return True
    kind = _content_kind(path, head)
    raise CacheError(f"{path} is not a layerscope cache (not a DuckDB file): it is {kind}")
