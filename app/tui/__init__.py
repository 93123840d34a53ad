"""The Textual explorer.

Kept import-light on purpose: importing this package must not pull in torch or transformers, so
that `layerscope` shows its first frame quickly and browsing cached results works on machines
where torch is missing or broken. `run_tui` is the entry point the CLI calls.
"""

from __future__ import annotations

from typing import Any


def run_tui(model: str | None = None, dataset: str | None = None, db: str | None = None) -> int:
    """Open the explorer, optionally preselecting a model and a dataset and using another cache;
    its exit status (1 when it stopped on an error)."""
    from layerscope.app.tui.app import run_tui as _run_tui

    return _run_tui(model=model, dataset=dataset, db=db)


def __getattr__(name: str) -> Any:
    if name == "LayerscopeApp":
        from layerscope.app.tui.app import LayerscopeApp

        return LayerscopeApp
    raise AttributeError(name)
