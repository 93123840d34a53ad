import sys
from pathlib import Path

import pytest

# tests/modelkit.py is a helper module, not a test: make it importable from every test file.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The explorer's results cache in a fresh folder (its state file and hub cache too)."""
    db = tmp_path / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    monkeypatch.setenv("LAYERSCOPE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return db


@pytest.fixture
def filled(cache_path: Path) -> dict[str, str]:
    """That cache filled with the synthetic runs of tests/tui_synthetic.py: type -> run id."""
    from tui_synthetic import fill_cache

    return fill_cache(cache_path)
