"""Writing what is on screen to files: charts as plain text, tables as CSV.

Kept apart from the widgets so that exports are plain functions a test can call, and so that a
failed write (read-only folder, full disk) becomes one message instead of an exception in the UI.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path


def safe_name(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "export"


def write_exports(
    folder: Path, texts: dict[str, str], tables: dict[str, Sequence[Sequence[str]]]
) -> list[Path]:
    """Write each text and table into `folder`; returns the paths written. Raises OSError."""
    folder = folder.expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in texts.items():
        path = folder / f"{safe_name(name)}.txt"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for name, rows in tables.items():
        path = folder / f"{safe_name(name)}.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(rows)
        written.append(path)
    return written
