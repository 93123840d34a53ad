"""The paper's table of MADs: rows model x mode, columns response types, each cell the MAD of one
statistic and projection over all layers and over the early, middle and late layers.

Why a module of its own: the table is what a result looks like in a paper (arXiv 2410.23743's
tables compare fast and slow thinking, base and instruct, model by model), and the command line
(``layerscope table``) and the explorer must lay it out from the same numbers. The MADs are
:func:`~layerscope.analysis.results.compare.mad_row`'s, so a table cell is exactly what ``show`` prints
for that run; each model's layers are split by its own depth
(:func:`~layerscope.analysis.results.compare.layer_splits`), which is what lets a 28-layer and a
42-layer model share one table. Each run's cells end with ``n``, the samples its curve stands
on (the most at any layer, as ``show``'s MAD table says): a MAD over 6 samples and one over 600
read alike otherwise. The renderings (Markdown, LaTeX, CSV) are plain text, for a paper's source
or a spreadsheet, with no UI in them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.base.records import LayerCurve, RunInfo
from layerscope.analysis.results.compare import MadRow, compare_runs, mad_row, resolve_metric

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache

__all__ = [
    "COLUMN_CELLS",
    "SEGMENTS",
    "TABLE_FORMATS",
    "PaperTable",
    "PaperTableRow",
    "build_paper_table",
    "paper_table",
    "render_table",
]

SEGMENTS = ("all", "early", "middle", "late")
COLUMN_CELLS = (*SEGMENTS, "n")  # per response type: its run's MADs, then its sample count
TABLE_FORMATS = ("markdown", "latex", "csv")


@dataclass(frozen=True)
class PaperTableRow:
    """One model in one mode: its depth and, by column, the MAD row of that column's run."""

    model: str
    mode: str
    layers: int
    cells: dict[str, MadRow] = field(default_factory=dict)  # column -> MADs (absent: no run)
    run_ids: dict[str, str] = field(default_factory=dict)  # column -> run id
    samples: dict[str, int] = field(default_factory=dict)  # column -> samples of its curve


@dataclass(frozen=True)
class PaperTable:
    """MADs of one statistic and projection, laid out as the paper's tables are."""

    metric: str
    projection: str
    columns: list[str]  # response types (dataset/type when the runs span several datasets)
    rows: list[PaperTableRow]
    response_tokens: tuple[int, int] | None = None


def paper_table(
    infos: Sequence[RunInfo],
    curves: Sequence[LayerCurve],
    metric: str,
    projection: str,
    response_tokens: tuple[int, int] | None = None,
) -> PaperTable:
    """The table of the runs ``infos`` from their ``curves`` of ``metric``: rows and columns in
    the order the runs are given. ValueError when two runs would fill the same cell, or when a
    run has no curve of ``projection``."""
    by_run = {c.run_id: c for c in curves if c.projection == projection}
    several_datasets = len({info.dataset for info in infos}) > 1
    columns: list[str] = []
    rows: dict[tuple[str, str], PaperTableRow] = {}
    for info in infos:
        curve = by_run.get(info.id)
        if curve is None:
            raise QueryError(
                f"run {info.short_id} has no {projection} curve of {metric} "
                f"(it has {','.join(info.projections) or 'no matrices'})"
            )
        column = f"{info.dataset}/{info.response_type}" if several_datasets else info.response_type
        if column not in columns:
            columns.append(column)
        row = rows.setdefault(
            (info.model, info.mode), PaperTableRow(info.model, info.mode, info.layers)
        )
        if column in row.cells:
            raise QueryError(
                f"runs {row.run_ids[column][:12]} and {info.short_id} are both {info.model} "
                f"({info.mode}) {column}: a table has one run per model, mode and type"
            )
        row.cells[column] = mad_row(curve)
        row.run_ids[column] = info.id
        row.samples[column] = max(curve.count, default=0)
    return PaperTable(metric, projection, columns, list(rows.values()), response_tokens)


def build_paper_table(
    cache: ResultsCache,
    run_ids: Sequence[str],
    metric: str,
    projection: str,
    response_tokens: tuple[int, int] | None = None,
) -> PaperTable:
    """:func:`paper_table` of cached runs (ids or unique prefixes); ``metric`` may be an alias
    (``nuclear``)."""
    metric = resolve_metric(metric)
    infos = [cache.run(run_id) for run_id in run_ids]
    comparison = compare_runs(
        cache, [i.id for i in infos], metric, [projection], response_tokens, significance=False
    )
    return paper_table(infos, comparison.curves, metric, projection, response_tokens)


def caption(table: PaperTable) -> str:
    """What the numbers are, in one line."""
    text = (
        f"MAD over layers of {table.metric}, {table.projection} projection "
        "(all layers; early, middle, late thirds); n: samples per run"
    )
    if table.response_tokens:
        low, high = table.response_tokens
        text += f"; samples with {low}-{high} response tokens"
    return text


def _number(value: float) -> str | None:
    return f"{value:.4g}" if math.isfinite(value) else None


def _header(table: PaperTable) -> list[str]:
    return ["model", "mode", "layers"] + [
        f"{column} {cell}" for column in table.columns for cell in COLUMN_CELLS
    ]


def _cells(row: PaperTableRow, columns: Sequence[str], number: Callable[[float], str]) -> list[str]:
    """The row's cells after model, mode and layers: per column its MADs written by
    ``number``, then its sample count; all empty where the column has no run."""
    texts: list[str] = []
    for column in columns:
        cell = row.cells.get(column)
        if cell is None:
            texts.extend([""] * len(COLUMN_CELLS))
            continue
        texts.extend(number(getattr(cell, segment)) for segment in SEGMENTS)
        texts.append(str(row.samples[column]))
    return texts


def _markdown(table: PaperTable, model_name: Callable[[str], str]) -> str:
    header = _header(table)
    lines = [
        f"{caption(table)}.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + " |",
    ]
    for row in table.rows:
        numbers = _cells(row, table.columns, lambda v: _number(v) or "–")
        fields = [model_name(row.model).replace("|", "\\|"), row.mode, str(row.layers), *numbers]
        lines.append("| " + " | ".join(fields) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _latex(table: PaperTable, model_name: Callable[[str], str]) -> str:
    width = len(COLUMN_CELLS)
    groups = " & ".join(
        rf"\multicolumn{{{width}}}{{c}}{{{_latex_escape(column)}}}" for column in table.columns
    )
    rules = " ".join(
        rf"\cmidrule(lr){{{4 + i * width}-{3 + (i + 1) * width}}}"
        for i in range(len(table.columns))
    )
    segments = " & ".join(list(COLUMN_CELLS) * len(table.columns))
    lines = [
        r"% needs \usepackage{booktabs}",
        rf"% {_latex_escape(caption(table))}",
        r"\begin{tabular}{llr" + "r" * width * len(table.columns) + "}",
        r"\toprule",
        rf" & & & {groups} \\",
        rules,
        rf"model & mode & layers & {segments} \\",
        r"\midrule",
    ]
    for row in table.rows:
        numbers = _cells(row, table.columns, lambda v: _number(v) or "--")
        fields = [_latex_escape(model_name(row.model)), _latex_escape(row.mode), str(row.layers)]
        lines.append(" & ".join(fields + numbers) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _csv(table: PaperTable, model_name: Callable[[str], str]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_header(table))
    for row in table.rows:
        numbers = _cells(row, table.columns, lambda v: repr(v) if math.isfinite(v) else "")
        writer.writerow([model_name(row.model), row.mode, row.layers, *numbers])
    return buffer.getvalue()


def render_table(
    table: PaperTable, table_format: str, model_name: Callable[[str], str] = str
) -> str:
    """The table as Markdown, LaTeX (booktabs) or CSV text; ``model_name`` shortens the
    models' names. Each run's MADs are followed by its sample count (``TYPE n``). A cell
    without a run is empty; a MAD that is undefined (a segment of one layer) is a dash, and
    empty in CSV, which keeps full precision."""
    if table_format == "markdown":
        return _markdown(table, model_name)
    if table_format == "latex":
        return _latex(table, model_name)
    if table_format == "csv":
        return _csv(table, model_name)
    raise QueryError(f"unknown table format {table_format!r}; choose one of {TABLE_FORMATS}")
