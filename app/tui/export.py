"""Writing what is on screen to files: charts as plain text, tables as CSV, and the chart as
the paper's four-panel figure (PNG and PDF, the file ``layerscope figure`` writes) when
matplotlib (the ``figures`` extra) is installed.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LayerCurve, RunInfo

FIGURE_FILES = ("png", "pdf")  # one to look at, one for a paper's LaTeX


@dataclass(frozen=True)
class ChartFigure:
    """What the chart shows, for :func:`layerscope.app.figures.paper_figure` to draw."""

    curves: list[LayerCurve]
    labels: dict[str, str]
    metric: str
    layer_counts: dict[str, int] = field(default_factory=dict)
    depth: str = "layer"
    band: bool = False


def can_draw_figures() -> bool:
    """Whether the figures extra (matplotlib) is installed, checked without importing it."""
    from layerscope.app.figures import have_matplotlib

    return have_matplotlib()


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


def _figure_files(name: str, chart: ChartFigure) -> dict[str, bytes]:
    from layerscope.app.figures import figure_bytes, paper_figure

    figure = paper_figure(
        chart.curves,
        chart.labels,
        chart.metric,
        layer_counts=chart.layer_counts,
        depth=chart.depth,
        band=chart.band,
    )
    return {f"{safe_name(name)}.{kind}": figure_bytes(figure, kind) for kind in FIGURE_FILES}


def write_exports(
    folder: Path,
    texts: dict[str, str],
    tables: Mapping[str, Sequence[Sequence[str]]],
    figures: Mapping[str, ChartFigure] | None = None,
    documents: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write each text (NAME.txt), table (NAME.csv), figure (NAME.png and NAME.pdf) and
    document (named with its own extension, e.g. table-nuclear_norm.tex) into `folder`;
    returns the paths written.

    Every file is checked before the first is written, and each appears whole or not at all
    (written beside it, then renamed: analysis/base/outputs.py). Raises OutputError or OSError.
    """
    from layerscope.analysis.base.outputs import OutputError, check_destination, open_output

    folder = folder.expanduser()
    contents: dict[Path, bytes] = {}
    for name, text in texts.items():
        contents[folder / f"{safe_name(name)}.txt"] = text.encode("utf-8")
    for name, rows in tables.items():
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(rows)
        contents[folder / f"{safe_name(name)}.csv"] = buffer.getvalue().encode("utf-8")
    for file_name, text in (documents or {}).items():
        stem, _, extension = file_name.rpartition(".")
        contents[folder / f"{safe_name(stem)}.{safe_name(extension)}"] = text.encode("utf-8")
    for name, chart in (figures or {}).items():  # drawn before anything is written
        for file_name, content in _figure_files(name, chart).items():
            contents[folder / file_name] = content
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
                handle.write(content)
        except OutputError as error:
            if not written:
                raise
            done = ", ".join(p.name for p in written)
            raise OutputError(f"{error} (written before it: {done})") from None
        written.append(path)
    return written


def paper_tables(
    runs: Sequence[RunInfo],
    curves: Sequence[LayerCurve],
    metric: str,
    projections: Sequence[str],
    length_range: tuple[int, int] | None,
) -> dict[str, str]:
    """The paper's MAD table (rows model x mode, columns response types) of `curves`, one table
    per projection that has curves, as Markdown and LaTeX: file name -> text. Empty when there
    is nothing to tabulate, or when two runs would share a cell (same model, mode and type)."""
    from layerscope.analysis.results.tables import paper_table, render_table
    from layerscope.app.labels import short_model

    curves = [c for c in curves if c.projection != "loss"]
    drawn = {c.run_id for c in curves}
    infos = [run for run in runs if run.id in drawn]
    if not infos:
        return {}
    documents: dict[str, list[str]] = {"md": [], "tex": []}
    try:
        for projection in projections:
            if not any(c.projection == projection for c in curves):
                continue
            having = [i for i in infos if any(
                c.run_id == i.id and c.projection == projection for c in curves
            )]  # fmt: skip
            table = paper_table(having, curves, metric, projection, length_range)
            documents["md"].append(render_table(table, "markdown", short_model))
            documents["tex"].append(render_table(table, "latex", short_model))
    except ValueError:
        return {}
    return {
        f"table-{metric}.{kind}": "\n".join(texts) for kind, texts in documents.items() if texts
    }
