"""Cheap structural guards for the explorer: who may import whom, and who may read the App.

Widgets get what they show from constructor arguments, pushes and messages; screens may use
widgets, never the other way round (a widget that needs a screen posts a message the App
handles). Starting the explorer must not import plotext: charts import it when first drawn.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import layerscope.app.tui.widgets as widgets_package

WIDGETS = sorted(Path(widgets_package.__file__).parent.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_widgets_never_import_screens():
    assert len(WIDGETS) > 10
    for path in WIDGETS:
        offending = {
            name for name in imported_modules(path) if name.startswith("layerscope.app.tui.screens")
        }
        assert not offending, (path.name, offending)


def test_widgets_do_not_read_app_attributes():
    for path in WIDGETS:
        source = path.read_text()
        for pattern in ("getattr(self.app", "self.app.db_path", "self.app.length_range"):
            assert pattern not in source, (path.name, pattern)


def test_starting_the_explorer_does_not_import_plotext():
    code = "import sys, layerscope.app.tui.app; print('plotext' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_quitting_before_the_tabs_are_filled_is_clean(tmp_path):
    """The tabs are filled right after the first frame; a user who quits at once (or a script
    that exits on the first frame) must not get a traceback."""
    script = (
        "import asyncio\n"
        "from layerscope.app.tui.app import LayerscopeApp\n"
        "async def first_frame(pilot):\n"
        "    painted = asyncio.Event()\n"
        "    pilot.app.call_after_refresh(painted.set)\n"
        "    await painted.wait()\n"
        "    pilot.app.exit()\n"
        "LayerscopeApp().run(headless=True, size=(100, 32), auto_pilot=first_frame)\n"
        "print('EXITED CLEANLY')\n"
    )
    env = {
        "LAYERSCOPE_DB": str(tmp_path / "results.duckdb"),
        "LAYERSCOPE_STATE": str(tmp_path / "state.json"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stdout + result.stderr
    assert result.stdout.strip().endswith("EXITED CLEANLY")
