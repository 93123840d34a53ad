"""What makes a record a sample: the checks every record passes, whatever file format it came
from, and the Sample built from it.

Why apart from the file readers: JSON, JSON lines, Parquet, Arrow and saved dataset folders all
yield records (dicts), and a record must be judged the same way in each, so that a field
mis-typed in Parquet is refused with the same words as in JSON lines. Two shapes are samples: an
instruction record (the field map's instruction, optional input and output) and a chat record
(turns; see :mod:`~layerscope.analysis.datasets.chat`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from layerscope.analysis.base.records import Sample
from layerscope.analysis.datasets.chat import CHAT_FIELDS, chat_field, chat_turns
from layerscope.analysis.datasets.sources import FieldMap

__all__ = ["json_kind", "numeric_fields", "record_problem", "to_sample"]

# JSON can spell these ("\\ud800"); they are not characters, and no text column or tokenizer
# takes them.
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def json_kind(value: object) -> str:
    """What a value is, in JSON's words, for error messages."""
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


def record_problem(record: object, fields: FieldMap) -> str | None:
    """Why `record` is not a usable sample, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {json_kind(record)}"
    chat = chat_field(record, fields.instruction)
    if chat is not None:
        parsed = chat_turns(record, chat)
        if isinstance(parsed, str):
            return parsed
        turns, response = parsed
        texts = [(f"turn {n} of {chat!r}", text) for n, (_role, text) in enumerate(turns, 1)]
        return _surrogate_problem([*texts, (f"the response in {chat!r}", response)]) or (
            _number_problem(record, fields)
        )
    for role, name in (("instruction", fields.instruction), ("output", fields.output)):
        if name not in record:
            present = ", ".join(repr(key) for key in list(record)[:8]) or "none"
            return (
                f"missing {role} field {name!r} (field map: {fields.describe()}; "
                f"the record has: {present}; a chat record holds "
                f"{' or '.join(repr(name) for name in CHAT_FIELDS)})"
            )
        if not isinstance(record[name], str):
            return f"{role} field {name!r} must be a string, found {json_kind(record[name])}"
    value = record.get(fields.input)
    if value is not None and not isinstance(value, str):
        return f"input field {fields.input!r} must be a string, found {json_kind(value)}"
    if not record[fields.output].strip():
        return f"empty output (field {fields.output!r}): there is no response to measure"
    roles = (("instruction", fields.instruction), ("input", fields.input))
    texts = [(f"{role} field {name!r}", record.get(name) or "") for role, name in roles]
    texts.append((f"output field {fields.output!r}", record[fields.output]))
    return _surrogate_problem(texts) or _number_problem(record, fields)


def _surrogate_problem(texts: list[tuple[str, str]]) -> str | None:
    for where, text in texts:
        surrogate = _SURROGATE.search(text)
        if surrogate is not None:
            return (
                f"{where} holds a lone surrogate "
                f"\\u{ord(surrogate.group()):04x} at character {surrogate.start() + 1}, which is "
                "not Unicode text (no tokenizer reads it)"
            )
    return None


def _number_problem(record: dict[str, Any], fields: FieldMap) -> str | None:
    text = {fields.instruction, fields.input, fields.output}
    for key, value in record.items():
        if key not in text and isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)  # what numeric_fields keeps of it
            except OverflowError:
                return (
                    f"field {key!r} is an integer of {len(str(abs(value)))} digits, beyond the "
                    "range of a number layerscope keeps (a float, about 1.8e308)"
                )
    return None


def to_sample(index: int, record: dict[str, Any], fields: FieldMap) -> Sample:
    """The Sample of a record that :func:`record_problem` accepted."""
    chat = chat_field(record, fields.instruction)
    if chat is not None:
        parsed = chat_turns(record, chat)
        assert not isinstance(parsed, str), parsed  # record_problem refused it otherwise
        turns, response = parsed
        return Sample(
            index=index,
            instruction="\n".join(text for _role, text in turns),
            output=response,
            numeric_fields=numeric_fields(record, fields),
            turns=turns,
        )
    return Sample(
        index=index,
        instruction=record[fields.instruction],
        output=record[fields.output],
        input=record.get(fields.input) or "",
        numeric_fields=numeric_fields(record, fields),
    )
