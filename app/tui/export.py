"""Writing what is on screen to files: charts as plain text, tables as CSV.

Kept apart from the widgets so that exports are plain functions a test can call, and so that a
failed write (read-only folder, full disk) becomes one message instead of an exception in the UI:
the export dialog checks the folder first (folder_problem) and shows what failed without closing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path


def safe_name(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "export"


def folder_problem(text: str) -> str | None:
    """Why an export cannot go into the folder typed, in one line naming it; None if it can.

    Checked before anything is written, so the dialog can say so and stay open.
    """
    if not text.strip():
        return "choose a folder"
    folder = Path(text.strip()).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            return f"folder {folder} is not writable"
        return f"cannot create folder {folder}: {existing} is not writable"
    return None


def write_exports(
    folder: Path, texts: dict[str, str], tables: dict[str, Sequence[Sequence[str]]]
) -> list[Path]:
    """Write each text and table into `folder`; returns the paths written.

    Every file is checked before the first is written, and each appears whole or not at all
    (written beside it, then renamed: analysis/outputs.py). Raises OutputError or OSError.
    """
    from layerscope.analysis.outputs import OutputError, check_destination, open_output

    folder = folder.expanduser()
    contents: dict[Path, str] = {}
    for name, text in texts.items():
        contents[folder / f"{safe_name(name)}.txt"] = text
    for name, rows in tables.items():
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(rows)
        contents[folder / f"{safe_name(name)}.csv"] = buffer.getvalue()
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for path in contents:  # an existing file is replaced, as before: it is our own export
            check_destination(path, {}, force=True)
    except BaseException:
        for path in created:  # deepest first: leave no empty folders behind
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    written: list[Path] = []
    for path, content in contents.items():
        try:
            with open_output(path, {}, force=True) as handle:
                handle.write(content.encode("utf-8"))
        except OutputError as error:
            if not written:
                raise
            done = ", ".join(p.name for p in written)
            raise OutputError(f"{error} (written before it: {done})") from None
        written.append(path)
    return written
