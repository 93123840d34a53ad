"""What the explorer remembers between sessions: recently used models and datasets, last picks.

A small JSON file next to the results cache (or wherever `$LAYERSCOPE_STATE` points), so that a
user who comes back finds their own models and data at the top of the pickers, and a fresh user
(no file yet) gets the built-in tiny model with the bundled math samples preselected. A broken or
unreadable file is never fatal: the explorer starts with defaults and rewrites it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_ENV = "LAYERSCOPE_STATE"
STATE_FILE_NAME = "tui-state.json"
RECENT_LIMIT = 8


def default_state_path(db_path: Path) -> Path:
    """`$LAYERSCOPE_STATE`, else a file next to the results cache."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured).expanduser()
    return db_path.expanduser().parent / STATE_FILE_NAME


@dataclass
class LastPicks:
    """The picks of the last run request, restored on the next start."""

    model: str = "tiny"
    mode: str = "base"
    dataset: str = "math"
    types: list[str] | None = None  # None: every type of the dataset
    samples: int | None = 8
    sample_seed: int | None = None
    max_length: int = 1024  # the engine's default, as in the paper's scripts
    batch_size: int = 4
    dtype: str = "auto"
    device: str = "auto"
    modules: str = "attn"


@dataclass
class UiState:
    """Recently used models and datasets (most recent first) and the last picks."""

    recent_models: list[str] = field(default_factory=list)
    recent_datasets: list[str] = field(default_factory=list)
    last: LastPicks = field(default_factory=LastPicks)
    theme: str | None = None

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
    defaults = asdict(LastPicks())
    last_values: dict[str, Any] = {
        key: last_raw.get(key, default) for key, default in defaults.items()
    }
    try:
        last = LastPicks(**last_values)
    except TypeError:
        last = LastPicks()
    return UiState(
        recent_models=_strings(raw.get("recent_models")),
        recent_datasets=_strings(raw.get("recent_datasets")),
        last=last,
        theme=raw.get("theme") if isinstance(raw.get("theme"), str) else None,
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
        temporary.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        return f"{path}: could not save the explorer state: {error.strerror or error}"
    return None
