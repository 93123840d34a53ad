"""The datasets shipped with layerscope, and the one rule for what a dataset name means."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from layerscope.analysis.datasets.sources import BUNDLED_DATASETS, DatasetError


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
