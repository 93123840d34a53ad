"""The write-ahead log beside a cache file: where it is, how much of it DuckDB replayed, and
whether a log DuckDB ignored was this file's.

Why a module of its own: a damaged log is one line with the way forward
(:class:`~.errors.DamagedLogError`), not DuckDB's words, and telling damage from a log that is
merely short takes reading the log's header and DuckDB's account of what it replayed, which
neither opening the file (:mod:`.connection`) nor ``layerscope doctor`` (:mod:`.health`) should
repeat. DuckDB 2 treats damage in three ways: a log cut short (a killed writer, a truncated copy)
is replayed up to its last complete transaction, so the runs it touched lose their last batches
and show as interrupted, and resuming recomputes them; an entry that fails its checksum makes
every open fail; a log whose header is not this file's is ignored without a word, and the next
write overwrites it. The last two name ``layerscope doctor --set-aside-wal`` (:mod:`.health`),
and the third is caught right after connecting (:func:`check_log_was_read`: how much was
replayed vs the log's size), before a write could destroy it. A log that replays nothing is also
what a writer killed during its first commit after a checkpoint leaves (nothing in it was
committed): that one still starts with this file's identifier and is no damage; only a log whose
header is not this file's is refused.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb

from layerscope.analysis.cache.errors import DamagedLogError

__all__ = ["check_log_was_read", "damaged_log_message", "replayed_log_bytes", "wal_path"]


def wal_path(path: Path) -> Path:
    """The write-ahead log DuckDB keeps beside a database file."""
    return path.with_name(path.name + ".wal")


_SIZE_TEXT = re.compile(r"([\d.]+)\s*(bytes|KiB|MiB|GiB|TiB|PiB)")
_SIZE_TEXT_UNITS = {
    "bytes": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
}


def replayed_log_bytes(con: duckdb.DuckDBPyConnection) -> tuple[float, float]:
    """How much of the write-ahead log DuckDB replayed on opening, as (low, high) bytes.

    DuckDB reports it rounded (``32.5 KiB``), hence the bounds. It stops at the last complete
    transaction of a truncated log and replays nothing of a log whose header does not belong
    to the file: comparing with the log's size on disk tells the three apart.
    """
    row = con.execute("SELECT wal_size FROM pragma_database_size()").fetchone()
    match = _SIZE_TEXT.fullmatch(str(row[0]).strip()) if row else None
    if match is None:
        return 0.0, math.inf  # unknown: assume it replayed
    value, unit = float(match.group(1)), _SIZE_TEXT_UNITS[match.group(2)]
    if unit == 1:
        return value, value
    return max(0.0, (value - 0.05) * unit), (value + 0.05) * unit


def damaged_log_message(path: Path, detail: str) -> str:
    """The one line for a log that cannot be replayed, with the way forward."""
    return (
        f"{wal_path(path)}: the write-ahead log is damaged ({detail}); "
        f"`layerscope doctor --db {path} --set-aside-wal` moves it aside "
        "(batches it held are recomputed on resume)"
    )


# DuckDB 2's log starts with a version entry holding the database's 16-byte identifier (as
# LEB128 varints after this prefix), which the main file's header also holds.
_LOG_PREFIX = bytes.fromhex("640062650002660010")
_IDENTIFIER_BYTES = 16


def _log_header_is_this_files(path: Path) -> bool:
    """Whether a log that replayed nothing still starts with this file's header.

    Then it is no damage: a writer was killed during its first commit after a checkpoint, and
    DuckDB rightly drops the uncommitted tail. A log too short to hold its header is the same
    (nothing in it was committed). Only a header that is not this file's is damage.
    """
    try:
        with open(wal_path(path), "rb") as handle:
            head = handle.read(len(_LOG_PREFIX) + 2 * _IDENTIFIER_BYTES)
        with open(path, "rb") as handle:
            main = handle.read(4096)
    except OSError:
        return True  # nothing to judge by: let DuckDB's own reading stand
    if len(head) < len(_LOG_PREFIX) + _IDENTIFIER_BYTES and _LOG_PREFIX.startswith(
        head[: len(_LOG_PREFIX)]
    ):
        return True  # killed while writing the header itself
    if not head.startswith(_LOG_PREFIX):
        # Damage in DuckDB 2's format; another version's log is not ours to judge.
        return not duckdb.__version__.startswith("2.")
    identifier = bytearray()
    position = len(_LOG_PREFIX)
    while len(identifier) < _IDENTIFIER_BYTES:
        value, shift = 0, 0
        while True:
            if position >= len(head):
                return True  # cut inside the identifier: killed while writing it
            byte = head[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if value > 0xFF:
            return False
        identifier.append(value)
    return bytes(identifier) in main


def check_log_was_read(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a file whose log DuckDB ignored (a header that is not this file's) before a
    write overwrites it: the batches in it would be lost without a word."""
    try:
        size = wal_path(path).stat().st_size
    except OSError:
        return
    if size > 0 and replayed_log_bytes(con)[1] == 0 and not _log_header_is_this_files(path):
        raise DamagedLogError(
            damaged_log_message(
                path, "its header does not belong to this file, so DuckDB ignored it"
            )
        )
