"""The JSON-lines progress of ``compute --progress-format jsonl``: typed records and one codec.

Why one module: the CLI writes these lines and the explorer reads them back when it computes in
a subprocess (a request on several GPUs). With the format spelt out on each side, a field
renamed on one would silently lose progress on the other; here each kind of line is a record,
:func:`encode` writes it and :func:`decode` reads it back to an equal value.

One JSON object per line, ``event`` naming its kind:

- ``plan``: ``runs``, each a :class:`~layerscope.analysis.runs.planning.PlannedRun` (run_id, dataset,
  response_type, total, cached, samples_in_file; its local ``path`` stays with the writer);
- ``stage``: a loading step, the fields of :class:`~layerscope.analysis.base.records.LoadStage`
  (step, description, done, total), and ``elapsed``;
- ``progress``: every field of :class:`~layerscope.analysis.runs.runner.RunProgress`, and
  ``elapsed``.

``elapsed`` counts seconds since the call began, to the millisecond. Lines that are not records
(a library printing to stdout, a kind of event from a newer version) are
:class:`NotAProgressLine`, which a reader skips; a line of a known kind with a field missing or
of the wrong type is a :class:`ProgressLineError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.runs.planning import PlannedRun
from layerscope.analysis.runs.runner import RunProgress

__all__ = [
    "NotAProgressLine",
    "PlanEvent",
    "ProgressEvent",
    "ProgressLineError",
    "ProgressRecord",
    "StageEvent",
    "decode",
    "encode",
]


class ProgressLineError(LayerscopeError, ValueError):
    """A line of the progress protocol that cannot be read; the message says why (a line the
    CLI wrote and the explorer cannot read is a bug of one of them: internal)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.internal = True


class NotAProgressLine(ProgressLineError):
    """A line that is no progress record at all: not a JSON object, or no known ``event``."""


@dataclass(frozen=True)
class PlanEvent:
    """The runs a request involves and what the cache already holds of each."""

    runs: tuple[PlannedRun, ...]


@dataclass(frozen=True)
class StageEvent:
    """A loading step reached (or advanced), ``elapsed`` seconds into the call."""

    stage: LoadStage
    elapsed: float


@dataclass(frozen=True)
class ProgressEvent:
    """Where one run stands, ``elapsed`` seconds into the call."""

    progress: RunProgress
    elapsed: float


ProgressRecord = PlanEvent | StageEvent | ProgressEvent

# What a plan line carries of a PlannedRun: everything but the writer's local path.
_PLAN_FIELDS = ("run_id", "dataset", "response_type", "total", "cached", "samples_in_file")


def encode(record: ProgressRecord) -> str:
    """``record`` as one line of JSON, without the line break."""
    data: dict[str, Any]
    if isinstance(record, PlanEvent):
        data = {
            "event": "plan",
            "runs": [{name: getattr(run, name) for name in _PLAN_FIELDS} for run in record.runs],
        }
    elif isinstance(record, StageEvent):
        data = {"event": "stage", **dataclasses.asdict(record.stage)}
        data["elapsed"] = round(record.elapsed, 3)
    elif isinstance(record, ProgressEvent):
        data = {"event": "progress", **dataclasses.asdict(record.progress)}
        data["elapsed"] = round(record.elapsed, 3)
    else:
        raise TypeError(f"not a progress record: {record!r}")
    return json.dumps(data)


def decode(line: str) -> ProgressRecord:
    """The record a line holds (see the module docs for the two errors)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise NotAProgressLine(
            f"progress line: not JSON ({error}): {line.strip()[:80]!r}"
        ) from None
    if not isinstance(data, dict):
        raise NotAProgressLine(f"progress line: not a JSON object: {line.strip()[:80]!r}")
    event = data.get("event")
    if event == "plan":
        runs = data.get("runs")
        if not isinstance(runs, list):
            raise ProgressLineError(f"progress line: 'plan' needs a list 'runs', got {runs!r}")
        return PlanEvent(
            tuple(_record(PlannedRun, run, "plan run", only=_PLAN_FIELDS) for run in runs)
        )
    if event == "stage":
        return StageEvent(_record(LoadStage, data, "stage"), _elapsed(data, "stage"))
    if event == "progress":
        return ProgressEvent(_record(RunProgress, data, "progress"), _elapsed(data, "progress"))
    raise NotAProgressLine(f"progress line: no known 'event' (plan, stage, progress): {event!r}")


Record = TypeVar("Record", PlannedRun, LoadStage, RunProgress)


def _record(
    kind: type[Record], data: Any, what: str, only: tuple[str, ...] | None = None
) -> Record:
    """A ``kind`` dataclass from the fields of ``data`` it declares (others are ignored);
    a field without a default must be there, and every one given must have its type."""
    if not isinstance(data, dict):
        raise ProgressLineError(f"progress line: a {what} is not a JSON object: {data!r}")
    hints = typing.get_type_hints(kind)
    values = {}
    for field in dataclasses.fields(kind):
        if only is not None and field.name not in only:
            continue
        if field.name not in data:
            if field.default is dataclasses.MISSING:
                raise ProgressLineError(f"progress line: {what} lacks {field.name!r}")
            continue
        value = data[field.name]
        if not _matches(value, hints[field.name]):
            raise ProgressLineError(
                f"progress line: {what} field {field.name!r} is {value!r}, "
                f"not {_type_name(hints[field.name])}"
            )
        values[field.name] = _as_float(value) if _wants_float(hints[field.name]) else value
    return kind(**values)


def _elapsed(data: dict[str, Any], what: str) -> float:
    value: Any = data.get("elapsed")
    if not _matches(value, float):
        raise ProgressLineError(f"progress line: {what} field 'elapsed' is {value!r}, not float")
    return float(value)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type (an integer fits a float; a bool fits neither)."""
    if len(_options(hint)) > 1:
        return any(_matches(value, option) for option in _options(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False  # nothing else travels in a progress line


def _options(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _wants_float(hint: Any) -> bool:
    """Whether a field is a float (maybe None), where JSON may have written ``0`` for ``0.0``."""
    return float in _options(hint) and int not in _options(hint)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) else value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
