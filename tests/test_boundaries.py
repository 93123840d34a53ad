"""Layer boundaries a user relies on: the headless core never pulls in the UI, and browsing
cached results never pays for torch."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import layerscope.analysis


def imported_after(code: str) -> set[str]:
    script = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(output.strip().splitlines()[-1]))


def analysis_modules() -> list[str]:
    """Every module of the analysis package, those of its subpackages (the cache) included."""
    return [
        m.name for m in pkgutil.walk_packages(layerscope.analysis.__path__, "layerscope.analysis.")
    ]


def test_analysis_never_imports_textual():
    modules = analysis_modules()
    assert "layerscope.analysis.compute.engine" in modules
    assert "layerscope.analysis.cache.connection" in modules
    assert "layerscope.analysis.cache.writes" in modules
    loaded = imported_after("\n".join(f"import {m}" for m in modules))
    assert not any(name == "textual" or name.startswith("textual.") for name in loaded)


def test_importing_analysis_does_not_import_torch():
    """Even the computing modules import torch only inside the functions that compute."""
    loaded = imported_after("\n".join(f"import {m}" for m in analysis_modules()))
    assert "torch" not in loaded
    assert "transformers" not in loaded


def test_shared_records_and_comparisons_do_not_import_the_cache():
    """Records and the statistics on them are plain: naming a curve needs no DuckDB code."""
    loaded = imported_after(
        "import layerscope.analysis.base.records, layerscope.analysis.curves.statistics, "
        "layerscope.analysis.results.compare"
    )
    assert "layerscope.analysis.cache" not in loaded
    assert "duckdb" not in loaded
