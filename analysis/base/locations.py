"""Where layerscope keeps its files by default, answered without importing anything heavy.

Why its own module: the explorer needs the results cache's path before its first frame (for the
log line and the state file beside it), and importing the cache package to ask would import
DuckDB, a third of a minimal Textual app's start-up time.
"""

from __future__ import annotations

import os
from pathlib import Path

from layerscope.analysis.base.environment import text_from_env

__all__ = ["default_db_path"]


def default_db_path() -> Path:
    """``$LAYERSCOPE_DB``, else ``$XDG_CACHE_HOME/layerscope/results.duckdb``."""
    env = text_from_env("LAYERSCOPE_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "layerscope" / "results.duckdb"
