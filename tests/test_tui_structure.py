"""Cheap structural guards for the explorer: who may import whom, and who may read the App.

Widgets get what they show from constructor arguments, pushes and messages; screens may use
widgets, never the other way round (a widget that needs a screen posts a message the App
handles). Starting the explorer must not import plotext: charts import it when first drawn.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import layerscope.app.tui.widgets as widgets_package

WIDGETS = sorted(Path(widgets_package.__file__).parent.glob("*.py"))


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
