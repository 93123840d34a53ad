"""What the explorer remembers between sessions: recently used models and datasets, last picks,
the chart: which runs it overlaid and how it showed them (statistic, projections, interval, scale).

The remembered settings are the settings record's (:mod:`layerscope.analysis.base.settings`): which
ones, their first-start values and how a stored value is checked all come from there.

A small JSON file next to the results cache (or wherever `$LAYERSCOPE_STATE` points), so that a
user who comes back finds their own models and data at the top of the pickers, and a fresh user
(no file yet) gets the built-in tiny model with the bundled math samples preselected. A broken or
unreadable file is never fatal: the explorer starts with defaults and rewrites it.

The chart's runs are kept with the cache file they were read from (one state file may serve
several caches: `$LAYERSCOPE_STATE`), and restored only with that cache; a run deleted since is
left out (the App says so in the log). Its view settings are kept as the chart pane reports them
(`ComparePane.view_settings`) and given back to it to check: a value this version does not know
falls back to its default there, so an old or edited file cannot break the chart.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope.analysis.base.environment import text_from_env
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import offered, setting

STATE_ENV = "LAYERSCOPE_STATE"
STATE_FILE_NAME = "tui-state.json"
RECENT_LIMIT = 8


def default_state_path(db_path: Path) -> Path:
    """`$LAYERSCOPE_STATE`, else a file next to the results cache."""
    configured = text_from_env(STATE_ENV)
    if configured:
        return Path(configured).expanduser()
    return db_path.expanduser().parent / STATE_FILE_NAME


# The settings the explorer remembers: its form's and the mode (chosen beside the model).
REMEMBERED_SETTINGS = ("mode", *(item.name for item in offered("form")))
# Names a setting had in state files written before the settings record (read and written).
STATE_KEYS = {"limit": "samples"}


def first_start_values() -> dict[str, Any]:
    """The settings a new user starts with: the record's quick defaults (a few samples)."""
    return {name: setting(name).default_for("form") for name in REMEMBERED_SETTINGS}


@dataclass
class LastPicks:
    """The picks of the last run request, restored on the next start."""

    model: str = "tiny"
    dataset: str = "math"
    types: list[str] | None = None  # None: every type of the dataset
    values: dict[str, Any] = field(default_factory=first_start_values)  # settings by name

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"model": self.model, "dataset": self.dataset}
        record["types"] = self.types
        for name, value in self.values.items():
            record[STATE_KEYS.get(name, name)] = value
        return record

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LastPicks:
        """Whatever a file holds: a value a setting does not accept gets its default."""
        values = first_start_values()
        for name in REMEMBERED_SETTINGS:
            key = STATE_KEYS.get(name, name)
            if key in raw:
                with contextlib.suppress(SettingError):
                    values[name] = setting(name).check(raw[key])
        types = raw.get("types")
        return cls(
            model=raw["model"] if isinstance(raw.get("model"), str) else "tiny",
            dataset=raw["dataset"] if isinstance(raw.get("dataset"), str) else "math",
            types=[t for t in types if isinstance(t, str)] if isinstance(types, list) else None,
            values=values,
        )


@dataclass
class ChartState:
    """The chart of the last session: the runs overlaid (in order) in `cache`, and its view."""

    cache: str = ""  # the results cache file the runs are in (resolved)
    runs: list[str] = field(default_factory=list)
    view: dict[str, Any] = field(default_factory=dict)  # ComparePane.view_settings()

    def runs_in(self, db_path: Path) -> list[str]:
        """The runs to overlay again when the explorer opens `db_path` (none for another)."""
        return list(self.runs) if self.cache == cache_key(db_path) else []

    def to_json(self) -> dict[str, Any]:
        return {"cache": self.cache, "runs": self.runs, "view": self.view}

    @classmethod
    def from_json(cls, raw: object) -> ChartState:
        if not isinstance(raw, dict):
            return cls()
        cache, runs, view = raw.get("cache"), raw.get("runs"), raw.get("view")
        return cls(
            cache=cache if isinstance(cache, str) else "",
            runs=[run for run in runs if isinstance(run, str)] if isinstance(runs, list) else [],
            view=dict(view) if isinstance(view, dict) else {},
        )


def cache_key(db_path: Path) -> str:
    """How the state file names a results cache: its absolute, resolved path."""
    return str(db_path.expanduser().resolve())


@dataclass
class UiState:
    """Recently used models and datasets (most recent first), the last picks and the chart."""

    recent_models: list[str] = field(default_factory=list)
    recent_datasets: list[str] = field(default_factory=list)
    last: LastPicks = field(default_factory=LastPicks)
    theme: str | None = None
    chart: ChartState = field(default_factory=ChartState)

    def remember(self, model: str, dataset: str) -> None:
        """Move a model and a dataset to the front of their recent lists."""
        self.recent_models = _front(self.recent_models, model)
        self.recent_datasets = _front(self.recent_datasets, dataset)


def _front(items: list[str], item: str) -> list[str]:
    return [item, *[other for other in items if other != item]][:RECENT_LIMIT]


def load_state(path: Path) -> UiState:
    """Read the state file; defaults when it is missing or unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return UiState()
    if not isinstance(raw, dict):
        return UiState()
    last_raw: dict[str, Any] = raw["last"] if isinstance(raw.get("last"), dict) else {}
    last = LastPicks.from_json(last_raw)
    return UiState(
        recent_models=_strings(raw.get("recent_models")),
        recent_datasets=_strings(raw.get("recent_datasets")),
        last=last,
        theme=raw.get("theme") if isinstance(raw.get("theme"), str) else None,
        chart=ChartState.from_json(raw.get("chart")),
    )


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)][:RECENT_LIMIT]


def save_state(path: Path, state: UiState) -> str | None:
    """Write the state file atomically; returns an error message instead of raising."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        record = {
            "recent_models": state.recent_models,
            "recent_datasets": state.recent_datasets,
            "last": state.last.to_json(),
            "theme": state.theme,
            "chart": state.chart.to_json(),
        }
        temporary.write_text(json.dumps(record, indent=2), encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        return f"{path}: could not save the explorer state: {error.strerror or error}"
    return None
