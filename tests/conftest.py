import os
import sys
import tempfile
from pathlib import Path

import pytest

# One torch thread in tests, set before anything imports torch (subprocesses, the CLI and
# torchrun's ranks, inherit it): torch's default intra-op threads spin-wait, and on a busy 2-core
# machine a frozen forward+backward took 1.05 s with 1 thread against 11.7 s with 2. Forced, not
# setdefault: a shell's OMP_NUM_THREADS=2 would bring the spinning back. LAYERSCOPE_TEST_THREADS
# picks another count on purpose.
_THREADS = os.environ.get("LAYERSCOPE_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = _THREADS
os.environ["MKL_NUM_THREADS"] = _THREADS
if "torch" in sys.modules:  # a plugin imported it first: the variables came too late for it
    sys.modules["torch"].set_num_threads(int(_THREADS))

# An internal error writes its traceback under $XDG_STATE_HOME (app/error_reports.py): the tests
# that provoke one (and their subprocesses) write to a folder of their own, not the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="layerscope-tests-state-")

# The terminal size tests see is theirs to choose: pytest-xdist's workers export COLUMNS=80 and
# LINES=24, which a plain run does not, and which folded the tables of tests that print long
# temporary paths. A test that wants a width sets COLUMNS itself.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)

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
