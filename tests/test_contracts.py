"""The import contracts bite: the layers in pyproject.toml hold on the real tree, and a copy of
the tree with one wrong import (the kind a hurried change makes) fails ``lint-imports``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed")


def lint_copy(tree: Path, wrong: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` over a copy of the packages (first on the path), with one import added
    to one module when ``wrong`` is (module path, import line)."""
    package = tree / "shim" / "layerscope"
    package.mkdir(parents=True)
    for name in ("analysis", "app"):
        shutil.copytree(ROOT / name, package / name, ignore=shutil.ignore_patterns("__pycache__"))
    if wrong is not None:
        module, line = wrong
        path = package / module
        path.write_text(path.read_text() + f"\n{line}  # deliberately wrong\n")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree / "shim")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_its_contracts(tmp_path):
    result = lint_copy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # records at the bottom: they must not reach up to the runner
        ("analysis/base/records.py", "import layerscope.analysis.runs.runner", "Layers"),
        # the cache sits below the runner
        ("analysis/cache/reads.py", "import layerscope.analysis.runs.planning", "Layers"),
        # the curves' arithmetic is cache-free: it must not reach up to the cache
        ("analysis/curves/statistics.py", "import layerscope.analysis.cache", "Layers"),
        # inside runs/: planning sits below the runner that uses it
        ("analysis/runs/planning.py", "import layerscope.analysis.runs.runner", "Runs"),
        # inside compute/: the spectral statistics know nothing of the engine
        ("analysis/compute/spectral.py", "import layerscope.analysis.compute.engine", "Compute"),
        # inside interchange/: reading a file knows nothing of the cache import built on it
        (
            "analysis/interchange/paper_parse.py",
            "import layerscope.analysis.interchange.paper_ingest",
            "Interchange",
        ),
        # inside models/: checking a model as the user types never reaches the torch loader
        ("analysis/models/inspection.py", "import layerscope.analysis.models.loading", "Models"),
        # the headless core never imports the UI
        ("analysis/results/compare.py", "import layerscope.app.labels", "analysis/ never imports"),
        # widgets never import screens (a widget posts a message; the App opens the screen)
        (
            "app/tui/widgets/samples/samples_view.py",
            "import layerscope.app.tui.screens.help",
            "Explorer",
        ),
        # one tab's widgets never import another tab's: what two tabs share lies in widgets/
        (
            "app/tui/widgets/samples/samples_view.py",
            "import layerscope.app.tui.widgets.chart.layer_chart",
            "Widgets",
        ),
        # the CLI reaches the explorer only to launch it
        ("app/cli/output.py", "import layerscope.app.tui.app", "The CLI never imports"),
        # a compatibility module wraps its library and nothing of layerscope
        ("analysis/compat/transformers.py", "import layerscope.analysis.base.records", "Layers"),
        ("app/compat/plotext.py", "import layerscope.app.tui.format", "compatibility modules"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    result = lint_copy(tmp_path, (module, line))
    assert result.returncode != 0
    assert "Broken contracts" in result.stdout, result.stdout
    assert contract in result.stdout.split("Broken contracts", 1)[1]
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
