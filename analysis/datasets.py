"""Finding and reading the datasets whose gradients layerscope measures.

Why this module exists: the paper's data comes as a folder layout, not as one file per dataset.
A dataset (say GSM8K) has several *response types* for the same questions: the bare answer
(`*_no_cot`), a short rationale (`*_with_cot`), a long one (`*_with_cot_gpt4o`), and for each of
them an *irrelevant* counterpart (same questions, shuffled answers) in a sibling folder named
`<folder>_wrong_answer_shuffle`. Users point layerscope at a file, a folder, a folder of folders or
a small TOML manifest; this module turns any of these into the same sorted list of
`ResponseTypeSource`s, so the engine, the CLI and the UI never have to know about layouts.

Discovery only looks at names (cheap enough for a UI listing); reading parses and validates a
file strictly, because a silently mis-mapped field would produce plausible-looking but wrong
gradient curves. Every error is a `DatasetError` whose message starts with the file and the line
(`FILE:LINE: `) or the record (`FILE: record N: `, 1-based), so a user can go straight to it.

Stdlib only and no torch: the UI lists datasets without loading any model.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from layerscope.analysis.records import Sample

__all__ = [
    "BUNDLED_DATASETS",
    "DATA_SUFFIXES",
    "IRRELEVANT_SUFFIX",
    "PAPER_RESPONSE_TYPES",
    "SHUFFLE_FOLDER_SUFFIX",
    "DatasetError",
    "FieldMap",
    "Relevance",
    "ResponseTypeSource",
    "bundled_dataset_path",
    "count_samples",
    "discover_sources",
    "file_sha256",
    "read_samples",
    "resolve_dataset",
]

Relevance = Literal["correct", "irrelevant"]

BUNDLED_DATASETS = ("math", "knowledge")
DATA_SUFFIXES = (".json", ".jsonl")
MANIFEST_SUFFIX = ".toml"
SHUFFLE_FOLDER_SUFFIX = "_wrong_answer_shuffle"
IRRELEVANT_SUFFIX = "_irrelevant"

# File-name suffix in the paper's data -> response type. Longest first: "_with_cot_gpt4o" also
# ends like nothing else, but "_with_cot" must not swallow it.
PAPER_RESPONSE_TYPES = (
    ("_with_cot_gpt4o", "detailed_cot"),
    ("_with_cot", "simplified_cot"),
    ("_no_cot", "none_cot"),
)
# Fast thinking first, then slower and slower; other response types after them.
_TYPE_ORDER = {"none_cot": 0, "simplified_cot": 1, "detailed_cot": 2}
# How deep a folder of folders is searched for dataset folders (a user pointing at their home
# folder must get an error, not a minute-long walk).
_MAX_FOLDER_DEPTH = 3
_SKIPPED_FOLDERS = {"__pycache__"}


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message names the file and line or record."""

    def __init__(
        self,
        where: str | Path,
        message: str,
        *,
        line: int | None = None,
        record: int | None = None,
    ) -> None:
        self.where = str(where)
        self.line = line
        self.record = record
        self.reason = message
        if record is not None:
            text = f"{where}: record {record}: {message}"
            if line is not None:
                text += f" (line {line})"
        elif line is not None:
            text = f"{where}:{line}: {message}"
        else:
            text = f"{where}: {message}"
        super().__init__(text)


@dataclass(frozen=True)
class FieldMap:
    """Which keys of a record hold the instruction, the optional input and the response."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"

    def __post_init__(self) -> None:
        for role in ("instruction", "input", "output"):
            value = getattr(self, role)
            if not isinstance(value, str) or not value:
                raise ValueError(f"field map: the {role} field name must be a non-empty string")
        if len({self.instruction, self.input, self.output}) != 3:
            raise ValueError(f"field map: field names must differ ({self.describe()})")

    def describe(self) -> str:
        """The map as a user wrote it, for error messages."""
        return f"instruction={self.instruction!r}, input={self.input!r}, output={self.output!r}"


@dataclass(frozen=True)
class ResponseTypeSource:
    """One file of responses of one type (e.g. gsm8k_train / detailed_cot, irrelevant)."""

    dataset: str
    response_type: str
    path: Path
    relevance: Relevance
    fields: FieldMap = FieldMap()

    @property
    def base_type(self) -> str:
        """The response type without the `_irrelevant` suffix: pairs correct and irrelevant."""
        return _base_type(self.response_type)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.response_type}"


# --------------------------------------------------------------------------------------------
# Discovery


def discover_sources(path: str | Path, fields: FieldMap | None = None) -> list[ResponseTypeSource]:
    """All response-type sources under `path`, sorted: dataset, then none_cot, simplified_cot,
    detailed_cot, other types, each correct source before its irrelevant counterpart.

    `path` is a .json/.jsonl data file, a folder in the paper's layout, a folder of such folders
    or a .toml manifest. `fields` maps record keys; for a manifest it replaces the manifest's own
    [fields] table. Only names are looked at: files are not opened (except manifests).
    """
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DatasetError(root, "no such file or folder")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == MANIFEST_SUFFIX:
            sources = _manifest_sources(root, fields)
        elif suffix in DATA_SUFFIXES:
            sources = [_file_source(root, fields or FieldMap())]
        else:
            raise DatasetError(
                root,
                f"unsupported file type {root.suffix or '(no extension)'!r} "
                "(expected .json, .jsonl or a .toml manifest)",
            )
    elif root.is_dir():
        sources = _folder_sources(root, fields, depth=0)
        if not sources:
            raise DatasetError(
                root, "no data files (.json, .jsonl or .toml manifests) in this folder"
            )
    else:
        raise DatasetError(root, "not a regular file or folder")
    _check_unique(sources)
    return sorted(sources, key=_sort_key)


def _sort_key(source: ResponseTypeSource) -> tuple[str, int, str, int, str]:
    base = source.base_type
    return (
        source.dataset,
        _TYPE_ORDER.get(base, len(_TYPE_ORDER)),
        base,
        0 if source.relevance == "correct" else 1,
        str(source.path),
    )


def _base_type(response_type: str) -> str:
    if response_type.endswith(IRRELEVANT_SUFFIX) and response_type != IRRELEVANT_SUFFIX:
        return response_type[: -len(IRRELEVANT_SUFFIX)]
    return response_type


def _check_unique(sources: list[ResponseTypeSource]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for source in sorted(sources, key=_sort_key):
        key = (source.dataset, source.response_type)
        if key in seen:
            raise DatasetError(
                source.path,
                f"dataset {source.dataset!r} response type {source.response_type!r} "
                f"is already given by {seen[key]}",
            )
        seen[key] = source.path


def _is_shuffle_folder(folder: Path) -> bool:
    return folder.name.endswith(SHUFFLE_FOLDER_SUFFIX) and folder.name != SHUFFLE_FOLDER_SUFFIX


def _correct_sibling(shuffle_folder: Path) -> Path:
    return shuffle_folder.with_name(shuffle_folder.name[: -len(SHUFFLE_FOLDER_SUFFIX)])


def _shuffle_sibling(folder: Path) -> Path:
    return folder.with_name(folder.name + SHUFFLE_FOLDER_SUFFIX)


def _paper_name(stem: str, folder_dataset: str) -> tuple[str, str]:
    """(dataset, response type) of a data file named `stem` in a folder named `folder_dataset`."""
    for suffix, response_type in PAPER_RESPONSE_TYPES:
        if stem.endswith(suffix):
            prefix = stem[: -len(suffix)]
            return (prefix or folder_dataset), response_type
    return folder_dataset, stem


def _folder_dataset_name(folder: Path) -> str:
    if _is_shuffle_folder(folder):
        return _correct_sibling(folder).name
    return folder.name


def _typed_source(
    dataset: str, response_type: str, path: Path, irrelevant: bool, fields: FieldMap
) -> ResponseTypeSource:
    irrelevant = irrelevant or response_type.endswith(IRRELEVANT_SUFFIX)
    if irrelevant and not response_type.endswith(IRRELEVANT_SUFFIX):
        response_type += IRRELEVANT_SUFFIX
    relevance: Relevance = "irrelevant" if irrelevant else "correct"
    return ResponseTypeSource(dataset, response_type, path, relevance, fields)


def _file_source(path: Path, fields: FieldMap) -> ResponseTypeSource:
    """A single data file: dataset from its folder (or paper file name), type from its stem."""
    dataset, response_type = _paper_name(path.stem, _folder_dataset_name(path.parent))
    return _typed_source(dataset, response_type, path, _is_shuffle_folder(path.parent), fields)


def _visible_children(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        raise DatasetError(folder, f"cannot list folder: {error.strerror or error}") from None
    return [child for child in children if not child.name.startswith(".")]


def _data_files(folder: Path) -> list[Path]:
    return [
        child
        for child in _visible_children(folder)
        if child.is_file() and child.suffix.lower() in DATA_SUFFIXES
    ]


def _manifests(folder: Path) -> list[Path]:
    return [
        child
        for child in _visible_children(folder)
        if child.is_file() and child.suffix.lower() == MANIFEST_SUFFIX
    ]


def _holds_data(folder: Path) -> bool:
    return folder.is_dir() and bool(_data_files(folder) or _manifests(folder))


def _folder_sources(folder: Path, fields: FieldMap | None, depth: int) -> list[ResponseTypeSource]:
    if _is_shuffle_folder(folder):
        sibling = _correct_sibling(folder)
        if _holds_data(sibling):
            return _dataset_folder_sources(sibling, fields)
    if _holds_data(folder):
        return _dataset_folder_sources(folder, fields)
    if depth >= _MAX_FOLDER_DEPTH:
        return []
    sources: list[ResponseTypeSource] = []
    for child in _visible_children(folder):
        if not child.is_dir() or child.name in _SKIPPED_FOLDERS:
            continue
        if _is_shuffle_folder(child) and _holds_data(_correct_sibling(child)):
            continue  # attached to its correct sibling, which the loop visits
        sources.extend(_folder_sources(child, fields, depth + 1))
    return sources


def _dataset_folder_sources(folder: Path, fields: FieldMap | None) -> list[ResponseTypeSource]:
    """A folder in the paper's layout (plus its shuffle sibling), and any manifests in it."""
    sources: list[ResponseTypeSource] = []
    claimed: set[Path] = set()
    for manifest in _manifests(folder):
        manifest_sources = _manifest_sources(manifest, fields)
        sources.extend(manifest_sources)
        claimed.update(source.path for source in manifest_sources)

    field_map = fields or FieldMap()
    dataset_name = folder.name
    if _is_shuffle_folder(folder):
        # Only reached when the correct sibling holds no data: irrelevant responses alone.
        dataset_name = _correct_sibling(folder).name
        for path in _data_files(folder):
            if path not in claimed:
                dataset, response_type = _paper_name(path.stem, dataset_name)
                sources.append(_typed_source(dataset, response_type, path, True, field_map))
        return sources

    correct_files = [path for path in _data_files(folder) if path not in claimed]
    for path in correct_files:
        dataset, response_type = _paper_name(path.stem, dataset_name)
        sources.append(_typed_source(dataset, response_type, path, False, field_map))

    shuffle = _shuffle_sibling(folder)
    if shuffle.is_dir():
        for path in _data_files(shuffle):
            if path in claimed:
                continue
            dataset, response_type = _paper_name(path.stem, dataset_name)
            sources.append(_typed_source(dataset, response_type, path, True, field_map))
    return sources


# --------------------------------------------------------------------------------------------
# Manifests

_MANIFEST_KEYS = ("name", "description", "fields", "types")
_TYPE_KEYS = ("file", "relevance", "fields")
_FIELD_KEYS = ("instruction", "input", "output")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _manifest_sources(manifest: Path, fields: FieldMap | None) -> list[ResponseTypeSource]:
    data = _load_toml(manifest)
    _reject_unknown(manifest, "", data, _MANIFEST_KEYS)

    name = data.get("name", manifest.stem)
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(manifest, "name: must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise DatasetError(manifest, "description: must be a string")

    manifest_fields = FieldMap()
    if "fields" in data:
        manifest_fields = _manifest_field_map(manifest, "fields", data["fields"], FieldMap())
    if fields is not None:
        manifest_fields = fields

    types = data.get("types")
    if types is None:
        raise DatasetError(manifest, "types: missing; add a [types.NAME] table with a file key")
    if not isinstance(types, dict) or not types:
        raise DatasetError(manifest, "types: must hold at least one [types.NAME] table")

    sources: list[ResponseTypeSource] = []
    for response_type, table in types.items():
        key = f"types.{response_type}"
        if not response_type.strip() or response_type == IRRELEVANT_SUFFIX:
            raise DatasetError(manifest, f"{key}: invalid response type name")
        if not isinstance(table, dict):
            raise DatasetError(manifest, f"{key}: must be a table with a file key")
        _reject_unknown(manifest, key, table, _TYPE_KEYS)
        type_fields = manifest_fields
        if "fields" in table and fields is None:
            type_fields = _manifest_field_map(
                manifest, f"{key}.fields", table["fields"], manifest_fields
            )
        relevance = _manifest_relevance(manifest, key, table, response_type)
        path = _manifest_file(manifest, key, table)
        sources.append(ResponseTypeSource(name, response_type, path, relevance, type_fields))
    return sources


def _load_toml(manifest: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise DatasetError(manifest, "TOML manifests need Python 3.11 or newer") from None
    try:
        raw = manifest.read_bytes()
    except OSError as error:
        raise DatasetError(manifest, f"cannot read manifest: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DatasetError(manifest, "not UTF-8 text", line=line) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise DatasetError(manifest, f"invalid TOML: {message}") from None
        reason = message[: position.start()].strip()
        raise DatasetError(
            manifest,
            f"invalid TOML: {reason} (column {position.group(2)})",
            line=int(position.group(1)),
        ) from None


def _reject_unknown(
    manifest: Path, prefix: str, table: Mapping[str, object], allowed: Iterable[str]
) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            raise DatasetError(
                manifest, f"{where}: unknown key (expected one of: {', '.join(allowed)})"
            )


def _manifest_field_map(manifest: Path, key: str, table: object, base: FieldMap) -> FieldMap:
    if not isinstance(table, dict):
        raise DatasetError(manifest, f"{key}: must be a table of instruction/input/output names")
    _reject_unknown(manifest, key, table, _FIELD_KEYS)
    names = {"instruction": base.instruction, "input": base.input, "output": base.output}
    for role, value in table.items():
        if not isinstance(value, str) or not value:
            raise DatasetError(manifest, f"{key}.{role}: must be a non-empty string")
        names[role] = value
    try:
        return FieldMap(**names)
    except ValueError as error:
        raise DatasetError(manifest, f"{key}: {error}") from None


def _manifest_relevance(
    manifest: Path, key: str, table: Mapping[str, object], response_type: str
) -> Relevance:
    value = table.get("relevance")
    if value is None:
        return "irrelevant" if response_type.endswith(IRRELEVANT_SUFFIX) else "correct"
    if value == "correct":
        return "correct"
    if value == "irrelevant":
        return "irrelevant"
    raise DatasetError(
        manifest, f"{key}.relevance: must be 'correct' or 'irrelevant', not {value!r}"
    )


def _manifest_file(manifest: Path, key: str, table: Mapping[str, object]) -> Path:
    value = table.get("file")
    if value is None:
        raise DatasetError(manifest, f"{key}.file: missing (the data file of this type)")
    if not isinstance(value, str) or not value:
        raise DatasetError(manifest, f"{key}.file: must be a non-empty string")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = manifest.parent / path
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DatasetError(manifest, f"{key}.file: {value!r} is not a .json or .jsonl data file")
    if not path.is_file():
        raise DatasetError(manifest, f"{key}.file: no such file {value!r} (looked at {path})")
    return path


# --------------------------------------------------------------------------------------------
# Reading


def read_samples(source: ResponseTypeSource) -> list[Sample]:
    """Every record of the source's file as a Sample (index = 0-based position in the file).

    Strict: a record that is not an object, lacks the instruction or output field, has a
    non-string field or an empty output raises DatasetError naming the file and line/record.
    """
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


def _read_json_document(path: Path, text: str, fields: FieldMap) -> list[Sample]:
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
    samples: list[Sample] = []
    for index, record in enumerate(document):
        problem = _record_problem(record, fields)
        if problem is not None:
            raise DatasetError(
                path, problem, record=index + 1, line=_array_record_line(text, index)
            )
        samples.append(_to_sample(index, record, fields))
    return samples


def _read_json_lines(path: Path, text: str, fields: FieldMap) -> list[Sample]:
    samples: list[Sample] = []
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
        samples.append(_to_sample(len(samples), record, fields))
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


def bundled_dataset_path(name: str) -> Path:
    """The folder of a dataset shipped with layerscope (paper layout; see BUNDLED_DATASETS)."""
    if name not in BUNDLED_DATASETS:
        raise DatasetError(
            name, f"unknown bundled dataset (bundled: {', '.join(BUNDLED_DATASETS)})"
        )
    folder = Path(str(files("layerscope.samples") / "datasets" / name))
    if not folder.is_dir():
        raise DatasetError(folder, "bundled dataset folder is missing (broken installation?)")
    return folder


def resolve_dataset(spec: str | Path) -> Path:
    """The one rule for what a dataset name means, used by the CLI, the explorer and the runner.

    A bundled dataset's name (``math``, ``knowledge``) always means the bundled samples, as the
    explorer lists them; a folder that happens to have such a name is reached as ``./math``.
    Anything else is a path (``~`` expanded).
    """
    if isinstance(spec, str) and spec in BUNDLED_DATASETS:
        return bundled_dataset_path(spec)
    return Path(spec).expanduser()
