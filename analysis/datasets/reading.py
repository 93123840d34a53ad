"""Reading samples from data files (JSON and JSON lines here, columnar formats through
:mod:`~layerscope.analysis.datasets.columnar`); counting and hashing them.

Why strict: a record with a missing or mis-typed field must stop with `FILE:LINE` or
`FILE: record N`, never become an empty instruction. The same goes for values Python's JSON
reader turns into internal errors (arrays nested thousands deep, an integer of more digits than
Python converts) and for text no tokenizer reads (a lone surrogate, which JSON can spell as
``"\\ud800"``): each is refused naming the file, the line or record and the field.

Why JSON lines are streamed: a data file can be far larger than memory would allow three copies
of (its bytes, its text, its records); JSON lines are read one line at a time, so only the
records are kept. Python's JSON parser has no streaming mode for one document, so a JSON array
above :data:`MAX_JSON_ARRAY_BYTES` is refused, with a pointer to JSON lines.

The SHA-256 of a file's bytes is part of each run's key, so the same data in two places shares
its cached runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from layerscope.analysis.base.records import Sample
from layerscope.analysis.datasets.columnar import (
    columnar_records,
    content_sha256,
    content_stamp,
    is_columnar,
)
from layerscope.analysis.datasets.records import json_kind, record_problem, to_sample
from layerscope.analysis.datasets.sources import DatasetError, FieldMap, ResponseTypeSource

# A JSON document (not JSON lines) is parsed whole, taking a few times its size in memory;
# a larger one is refused with a pointer to JSON lines.
MAX_JSON_ARRAY_BYTES = 512 * 2**20

# --------------------------------------------------------------------------------------------
# Reading


def read_samples(source: ResponseTypeSource) -> list[Sample]:
    """Every record of the source's file as a Sample (index = 0-based position in the file).

    Strict: a record that is not an object, lacks the instruction or output field, has a
    non-string field, an empty output, text with a lone surrogate or an integer beyond a float
    raises DatasetError naming the file and line/record. A record's other numeric fields
    (quality scores such as ``ifd_gpt2`` or ``reward``) travel with it as
    ``Sample.numeric_fields``.
    """
    return [sample for _record, sample in _read(source)]


def read_records(source: ResponseTypeSource) -> list[dict[str, Any]]:
    """Every record of the source's file as it is written there, all its fields kept, in the
    order (and so with the indices) of :func:`read_samples`, validated the same way: what
    ``layerscope select`` writes back so that a chosen subset is a dataset again."""
    return [record for record, _sample in _read(source)]


Parsed = list[tuple[dict[str, Any], Sample]]


def _read(source: ResponseTypeSource) -> Parsed:
    return list(_records(source))


def _records(source: ResponseTypeSource) -> Iterator[tuple[dict[str, Any], Sample]]:
    """The file's (record, sample) pairs, one at a time for JSON lines and columnar data."""
    path = Path(source.path)
    if is_columnar(path):
        yield from _read_columnar(path, source.fields)
        return
    if path.suffix.lower() == ".jsonl":
        yield from _read_json_lines(path, _file_lines(path), source.fields)
        return
    size = _file_size(path)
    if size > MAX_JSON_ARRAY_BYTES:
        if _first_character(path) == "[":
            raise DatasetError(
                path,
                f"a JSON array of {size / 2**20:.0f} MiB is more than layerscope reads whole "
                f"({MAX_JSON_ARRAY_BYTES // 2**20} MiB); write it as JSON lines (.jsonl, one "
                "record per line), which are read a line at a time",
            )
        yield from _read_json_lines(path, _file_lines(path), source.fields)
        return
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(path, "no samples (the file is empty)")
    yield from _read_json_document(path, text, source.fields)


def _read_columnar(path: Path, fields: FieldMap) -> Iterator[tuple[dict[str, Any], Sample]]:
    count = 0
    for count, record in enumerate(columnar_records(path), start=1):
        problem = record_problem(record, fields)
        if problem is not None:
            raise DatasetError(path, problem, record=count)
        yield record, to_sample(count - 1, record, fields)
    if not count:
        raise DatasetError(path, "no samples (no rows)")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except OSError as error:
        raise DatasetError(path, f"cannot read file: {error.strerror or error}") from None


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except OSError as error:
        raise DatasetError(path, f"cannot read file: {error.strerror or error}") from None


def _first_character(path: Path) -> str:
    """The first character of the file that is not JSON whitespace ("" for none)."""
    with _open(path) as stream:
        head = stream.read(3)
        if head != b"\xef\xbb\xbf":  # a UTF-8 byte order mark
            stream.seek(0)
        while chunk := stream.read(1 << 16):
            rest = chunk.lstrip(b" \t\r\n")
            if rest:
                return chr(rest[0]) if rest[0] < 0x80 else ""
    return ""


def _file_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines as text, numbered from 1, read and decoded one at a time (so that
    invalid UTF-8 names its line). Split at "\\n" only, as JSON strings may hold raw U+2028."""
    with _open(path) as stream:
        offset = 0
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(
                    path, f"not UTF-8 text (byte {offset + error.start})", line=number
                ) from None
            offset += len(raw)
            yield number, text


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "no such file") from None
    except OSError as error:
        raise DatasetError(path, f"cannot read file: {error.strerror or error}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DatasetError(path, f"not UTF-8 text (byte {error.start})", line=line) from None


class _TooManyDigits:
    """Where an integer of more digits than Python converts stood in a parsed value."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _marked_integer(text: str) -> int | _TooManyDigits:
    try:
        return int(text)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return _TooManyDigits(len(text.lstrip("-")))


def _first_marked(value: Any) -> tuple[str, _TooManyDigits] | None:
    """The path (``key``, ``key.inner[2]``) of the first too-long integer in a parsed value."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, _TooManyDigits):
            return where, item
        if isinstance(item, dict):
            children = [(f"{where}.{k}" if where else str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(f"{where}[{i}]", v) for i, v in enumerate(item)]
        else:
            continue
        pending.extend(reversed(children))
    return None


def _too_many_digits(text: str, document: bool) -> tuple[int | None, str] | None:
    """For JSON that Python refused for an integer too long to convert: the 0-based record of
    a document (None for a line of JSON lines) and a problem naming the field; None if that
    was not why."""
    try:
        value = json.loads(text, parse_int=_marked_integer)
    except (ValueError, RecursionError):
        return None
    found = _first_marked(value)
    if found is None:
        return None
    where, marker = found
    record: int | None = None
    if document and isinstance(value, list):
        record = int(where[1 : where.index("]")])
        where = where[where.index("]") + 1 :].lstrip(".")
    limit = sys.get_int_max_str_digits()
    named = f"field {where!r}" if where else "the value"
    return record, (
        f"{named} is an integer of {marker.digits} digits; Python reads at most {limit}"
    )


def _refusal(path: Path, text: str, error: Exception, line: int | None) -> DatasetError:
    """Why json.loads refused ``text`` (a line of JSON lines numbered ``line``, or the whole
    document when None), as one DatasetError naming the file and, where it can, the line."""
    if isinstance(error, json.JSONDecodeError):
        return DatasetError(
            path,
            f"invalid JSON: {error.msg} (column {error.colno})",
            line=error.lineno if line is None else line,
        )
    if isinstance(error, RecursionError):
        return DatasetError(
            path, "invalid JSON: arrays or objects nested too deeply to read", line=line
        )
    found = _too_many_digits(text, document=line is None)
    if found is None:
        return DatasetError(path, f"invalid JSON: {error}", line=line)
    record, problem = found
    if record is None:
        return DatasetError(path, problem, line=line)
    return DatasetError(path, problem, record=record + 1, line=_array_record_line(text, record))


def _load(path: Path, text: str, line: int) -> Any:
    """One line of JSON lines, its failures as DatasetError naming the file and line."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _refusal(path, text, error, line) from None


def _read_json_document(path: Path, text: str, fields: FieldMap) -> Parsed:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            # One object per line, saved with a .json name (common for exported datasets).
            return list(_read_json_lines(path, _text_lines(text), fields))
        raise _refusal(path, text, error, None) from None
    except (ValueError, RecursionError) as error:
        raise _refusal(path, text, error, None) from None
    if not isinstance(document, list):
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        raise DatasetError(
            path,
            f"expected a JSON array of records, found {json_kind(document)}",
            line=line,
        )
    if not document:
        raise DatasetError(path, "no samples (empty JSON array)")
    samples: Parsed = []
    for index, record in enumerate(document):
        problem = record_problem(record, fields)
        if problem is not None:
            raise DatasetError(
                path, problem, record=index + 1, line=_array_record_line(text, index)
            )
        samples.append((record, to_sample(index, record, fields)))
    return samples


def _text_lines(text: str) -> Iterator[tuple[int, str]]:
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and similar separators.
    return enumerate(text.split("\n"), start=1)


def _read_json_lines(
    path: Path, lines: Iterable[tuple[int, str]], fields: FieldMap
) -> Iterator[tuple[dict[str, Any], Sample]]:
    count = 0
    for line_number, line in lines:
        if not line.strip():
            continue
        record = _load(path, line, line_number)
        problem = record_problem(record, fields)
        if problem is not None:
            raise DatasetError(path, problem, line=line_number)
        yield record, to_sample(count, record, fields)
        count += 1
    if not count:
        raise DatasetError(path, "no samples (the file is empty)")


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _array_record_line(text: str, index: int) -> int | None:
    """The line where record `index` of an (already valid) JSON array starts."""
    decoder = json.JSONDecoder()
    try:
        position = _skip_whitespace(text, _skip_whitespace(text, 0) + 1)  # past "["
        for _ in range(index):
            _, position = decoder.raw_decode(text, position)
            position = _skip_whitespace(text, _skip_whitespace(text, position) + 1)  # past ","
    except (ValueError, IndexError):
        return None
    return text.count("\n", 0, position) + 1


# --------------------------------------------------------------------------------------------
# Counting, hashing, bundled data

_COUNT_CACHE_SIZE = 512
_count_cache: dict[tuple[str, tuple[tuple[str, int, int], ...], FieldMap], int] = {}
_count_lock = threading.Lock()


def count_samples(source: ResponseTypeSource) -> int:
    """How many samples read_samples(source) returns; cached by (path, mtime and size of its files, fields).

    It validates like read_samples (so a listing can flag a broken file before a run starts)
    and raises the same DatasetError.
    """
    path = Path(source.path)
    key = (str(path), content_stamp(path), source.fields)
    with _count_lock:
        cached = _count_cache.get(key)
    if cached is not None:
        return cached
    count = sum(1 for _ in _records(source))  # one record at a time for JSON lines
    with _count_lock:
        while len(_count_cache) >= _COUNT_CACHE_SIZE:
            del _count_cache[next(iter(_count_cache))]
        _count_cache[key] = count
    return count


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (of a saved dataset folder's shards): identifies a dataset
    file's content in the cache."""
    if Path(path).is_dir():
        return content_sha256(Path(path))
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise DatasetError(path, f"cannot read file: {error.strerror or error}") from None
    return digest.hexdigest()
