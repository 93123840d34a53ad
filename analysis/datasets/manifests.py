"""Small TOML manifests that describe a dataset kept in files of any names.

Why strict: a manifest is typed by hand, and a misspelled key that was silently ignored would map
the wrong field to the response and produce plausible but wrong curves. Every error names the
manifest, the key and, for TOML syntax, the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from layerscope.analysis.datasets.columnar import is_saved_dataset
from layerscope.analysis.datasets.sources import (
    DATA_KINDS,
    DATA_SUFFIXES,
    IRRELEVANT_SUFFIX,
    DatasetError,
    FieldMap,
    Relevance,
    ResponseTypeSource,
)

# --------------------------------------------------------------------------------------------
# Manifests

_MANIFEST_KEYS = ("name", "description", "fields", "types")
_TYPE_KEYS = ("file", "relevance", "fields")
_FIELD_KEYS = ("instruction", "input", "output")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def sources_from_manifest(manifest: Path, fields: FieldMap | None) -> list[ResponseTypeSource]:
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
    if is_saved_dataset(path):
        return path
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DatasetError(manifest, f"{key}.file: {value!r} is not data ({DATA_KINDS})")
    if not path.is_file():
        raise DatasetError(manifest, f"{key}.file: no such file {value!r} (looked at {path})")
    return path
