"""Reading samples from JSON and JSON-lines files; counting and hashing them.

Why strict: a record with a missing or mis-typed field must stop with `FILE:LINE` or
`FILE: record N`, never become an empty instruction. The SHA-256 of a file's bytes is part of
each run's key, so the same data in two places shares its cached runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from pathlib import Path
from typing import Any

from layerscope.analysis.base.records import Sample
from layerscope.analysis.datasets.sources import DatasetError, FieldMap, ResponseTypeSource

# --------------------------------------------------------------------------------------------
# Reading


def read_samples(source: ResponseTypeSource) -> list[Sample]:
    """Every record of the source's file as a Sample (index = 0-based position in the file).

    Strict: a record that is not an object, lacks the instruction or output field, has a
    non-string field or an empty output raises DatasetError naming the file and line/record.
    A record's other numeric fields (quality scores such as ``ifd_gpt2`` or ``reward``) travel
    with it as ``Sample.numeric_fields``.
    """
    return [sample for _record, sample in _read(source)]


def read_records(source: ResponseTypeSource) -> list[dict[str, Any]]:
    """Every record of the source's file as it is written there, all its fields kept, in the
    order (and so with the indices) of :func:`read_samples`, validated the same way: what
    ``layerscope select`` writes back so that a chosen subset is a dataset again."""
    return [record for record, _sample in _read(source)]


def numeric_fields(record: dict[str, Any], fields: FieldMap) -> dict[str, float]:
    """A record's own finite numbers besides the text fields (booleans are not numbers)."""
    text = {fields.instruction, fields.input, fields.output}
    return {
        str(key): float(value)
        for key, value in record.items()
        if key not in text
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def _read(source: ResponseTypeSource) -> list[tuple[dict[str, Any], Sample]]:
    path = Path(source.path)
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(path, "no samples (the file is empty)")
    if path.suffix.lower() == ".jsonl":
        samples = _read_json_lines(path, text, source.fields)
    else:
        samples = _read_json_document(path, text, source.fields)
    if not samples:
        raise DatasetError(path, "no samples")
    return samples


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


Parsed = list[tuple[dict[str, Any], Sample]]


def _read_json_document(path: Path, text: str, fields: FieldMap) -> Parsed:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            # One object per line, saved with a .json name (common for exported datasets).
            return _read_json_lines(path, text, fields)
        raise DatasetError(
            path, f"invalid JSON: {error.msg} (column {error.colno})", line=error.lineno
        ) from None
    if not isinstance(document, list):
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        raise DatasetError(
            path,
            f"expected a JSON array of records, found {_json_kind(document)}",
            line=line,
        )
    if not document:
        raise DatasetError(path, "no samples (empty JSON array)")
    samples: Parsed = []
    for index, record in enumerate(document):
        problem = _record_problem(record, fields)
        if problem is not None:
            raise DatasetError(
                path, problem, record=index + 1, line=_array_record_line(text, index)
            )
        samples.append((record, _to_sample(index, record, fields)))
    return samples


def _read_json_lines(path: Path, text: str, fields: FieldMap) -> Parsed:
    samples: Parsed = []
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and similar separators.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                path, f"invalid JSON: {error.msg} (column {error.colno})", line=line_number
            ) from None
        problem = _record_problem(record, fields)
        if problem is not None:
            raise DatasetError(path, problem, line=line_number)
        samples.append((record, _to_sample(len(samples), record, fields)))
    return samples


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _record_problem(record: object, fields: FieldMap) -> str | None:
    """Why `record` is not a usable sample, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {_json_kind(record)}"
    for role, name in (("instruction", fields.instruction), ("output", fields.output)):
        if name not in record:
            present = ", ".join(repr(key) for key in list(record)[:8]) or "none"
            return (
                f"missing {role} field {name!r} (field map: {fields.describe()}; "
                f"the record has: {present})"
            )
        if not isinstance(record[name], str):
            return f"{role} field {name!r} must be a string, found {_json_kind(record[name])}"
    value = record.get(fields.input)
    if value is not None and not isinstance(value, str):
        return f"input field {fields.input!r} must be a string, found {_json_kind(value)}"
    if not record[fields.output].strip():
        return f"empty output (field {fields.output!r}): there is no response to measure"
    return None


def _to_sample(index: int, record: dict[str, Any], fields: FieldMap) -> Sample:
    return Sample(
        index=index,
        instruction=record[fields.instruction],
        output=record[fields.output],
        input=record.get(fields.input) or "",
        numeric_fields=numeric_fields(record, fields),
    )


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
_count_cache: dict[tuple[str, int, int, FieldMap], int] = {}
_count_lock = threading.Lock()


def count_samples(source: ResponseTypeSource) -> int:
    """How many samples read_samples(source) returns; cached by (path, mtime, size, fields).

    It validates like read_samples (so a listing can flag a broken file before a run starts)
    and raises the same DatasetError.
    """
    path = Path(source.path)
    try:
        stat = path.stat()
    except OSError:
        raise DatasetError(path, "no such file") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, source.fields)
    with _count_lock:
        cached = _count_cache.get(key)
    if cached is not None:
        return cached
    count = len(read_samples(source))
    with _count_lock:
        while len(_count_cache) >= _COUNT_CACHE_SIZE:
            del _count_cache[next(iter(_count_cache))]
        _count_cache[key] = count
    return count


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes: identifies a dataset file's content in the cache."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise DatasetError(path, f"cannot read file: {error.strerror or error}") from None
    return digest.hexdigest()
