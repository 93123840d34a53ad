"""Short, distinguishing names for runs in legends and tables.

A legend that repeats "tiny / math / base" on every line hides what differs. Labels keep only
the parts that tell the overlaid runs apart (model, dataset, response type, mode), falling back
to the run id prefix when two runs differ only in settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

ID_PREFIX = 8


def short_model(model: str) -> str:
    """`tiny`, a hub id's last part, or a folder's name."""
    if not model:
        return "?"
    if "/" in model and not model.startswith(("/", ".", "~")) and model.count("/") == 1:
        return model.split("/")[-1]
    return PurePath(model).name or model


def _parts(run: Any) -> list[str]:
    return [short_model(run.model), run.dataset, run.response_type, run.mode]


def run_labels(runs: Sequence[Any]) -> dict[str, str]:
    """run id -> the shortest label that tells these runs apart."""
    if not runs:
        return {}
    all_parts = [_parts(run) for run in runs]
    if len(runs) == 1:
        kept = [2, 3] if all_parts[0][3] != "base" else [2]
    else:
        kept = [
            position for position in range(4) if len({parts[position] for parts in all_parts}) > 1
        ] or [2]
    labels = {
        run.id: " ".join(parts[p] for p in kept) for run, parts in zip(runs, all_parts, strict=True)
    }
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {
        run_id: f"{label} #{run_id[:ID_PREFIX]}" if counts[label] > 1 else label
        for run_id, label in labels.items()
    }


def full_label(run: Any) -> str:
    """Everything that names a run: model / dataset / type (mode)."""
    return f"{short_model(run.model)} / {run.dataset} / {run.response_type} ({run.mode})"
