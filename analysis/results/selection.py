"""Samples as data: per-sample variables of a run, their Spearman correlations, and choosing
the samples a gradient statistic singles out, written back as a dataset.

Why: the follow-up paper (arXiv 2504.10766) relates each sample's layer-wise gradients to its
quality scores (higher-quality samples have lower nuclear norms) and trains on the samples the
gradients pick. A run already holds every sample's statistics, loss and length, and the cache
keeps each record's own numeric fields (``ifd_gpt2``, ``reward``, ...), so these questions need
no recomputation: :func:`sample_variables` lines them up by sample index, :func:`correlations`
ranks them against each other (Spearman: the scores are on arbitrary scales, and what matters is
the order), and :func:`select_samples` with :func:`write_selection` writes the top or bottom K
records, as the data file has them (all their fields), to a file ``compute --dataset`` reads.

Numbers come from ``scipy.stats.spearmanr`` (rank correlation with average ranks for ties and
its t-based p-value); samples where either side is missing or not finite are left out of a pair,
and ``n`` says how many were used. Records come back from the run's own data file, checked
against the SHA-256 the run was keyed by, so a selection is never taken from an edited file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layerscope.analysis.base.errors import QueryError, mention
from layerscope.analysis.base.outputs import open_output
from layerscope.analysis.base.records import MATRIX_STATISTICS, RunInfo
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import (
    DatasetError,
    FieldMap,
    ResponseTypeSource,
    file_sha256,
    numeric_fields,
    read_records,
)

__all__ = [
    "LENGTH",
    "LOSS",
    "Correlation",
    "Selection",
    "correlations",
    "run_records",
    "sample_fields",
    "sample_variables",
    "select_samples",
    "spearman",
    "statistic_variable",
    "write_records",
    "write_selection",
]

# Names of the per-sample variables that are not gradient statistics.
LOSS = "loss"
LENGTH = "response_tokens"

End = Literal["top", "bottom"]


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho between two per-sample variables over the ``n`` samples both have."""

    first: str
    second: str
    rho: float
    p_value: float
    n: int


@dataclass(frozen=True)
class Selection:
    """The samples of a run chosen by a statistic: indices in order (first = most extreme)."""

    run_id: str
    statistic: str
    projection: str | None
    layers: tuple[int, int] | None
    end: End
    indices: tuple[int, ...]
    values: tuple[float, ...]
    candidates: int  # samples with a finite value to choose from
    describe: str = field(default="")


def statistic_variable(statistic: str, projection: str | None) -> str:
    """The name a per-sample statistic goes by in tables: ``nuclear_norm q`` or
    ``nuclear_norm`` (mean over every projection)."""
    return statistic if projection is None else f"{statistic} {projection}"


def _source(info: RunInfo) -> ResponseTypeSource:
    settings = info.settings
    path = settings.get("data_file")
    if not path:
        raise DatasetError(
            info.short_id,
            "run has no data file of its own (imported runs keep no records); "
            "select and record fields need a computed run",
        )
    fields = settings.get("fields") or {}
    relevance = settings.get("relevance", "correct")
    return ResponseTypeSource(
        info.dataset,
        info.response_type,
        Path(path),
        "irrelevant" if relevance == "irrelevant" else "correct",
        FieldMap(**fields),
    )


def run_records(info: RunInfo) -> list[dict[str, Any]]:
    """The run's data file's records, all fields, by index; DatasetError when the file is gone
    or is not the one the run measured (its SHA-256 differs)."""
    source = _source(info)
    expected = info.settings.get("data_sha256")
    if not source.path.exists():
        raise DatasetError(source.path, f"no such file (the data file of run {info.short_id})")
    if expected and file_sha256(source.path) != expected:
        raise DatasetError(
            source.path,
            f"changed since run {info.short_id} measured it (SHA-256 differs); "
            "its records can no longer be matched to the run's samples",
        )
    return read_records(source)


def sample_fields(cache: ResultsCache, info: RunInfo) -> dict[str, dict[int, float]]:
    """The samples' own numeric fields: from the cache, or, for runs stored before it kept
    them, from the unchanged data file; empty when neither has any."""
    stored = cache.sample_fields(info.id)
    if stored or not info.settings.get("data_file"):
        return stored
    try:
        records = run_records(info)
    except DatasetError:
        return {}
    fields = FieldMap(**(info.settings.get("fields") or {}))
    measured = {row.index for row in cache.samples(info.id, sort_by="index")}
    found: dict[str, dict[int, float]] = {}
    for index, record in enumerate(records):
        if index in measured:
            for name, value in numeric_fields(record, fields).items():
                found.setdefault(name, {})[index] = value
    return found


def sample_variables(
    cache: ResultsCache,
    info: RunInfo,
    statistics: str | Sequence[str] = "nuclear_norm",
    layers: tuple[int, int] | None = None,
) -> dict[str, dict[int, float]]:
    """Every per-sample variable of a run, by name -> {index: value}: for each statistic its
    mean over ``layers`` and every projection, then its mean per projection; then the loss,
    the response length and the records' own numeric fields (in name order)."""
    chosen = [statistics] if isinstance(statistics, str) else list(statistics)
    variables: dict[str, dict[int, float]] = {}
    for statistic in chosen:
        if statistic not in MATRIX_STATISTICS:
            raise QueryError(f"unknown statistic {statistic!r}")
        for projection in (None, *info.projections):
            variables[statistic_variable(statistic, projection)] = cache.sample_means(
                info.id, statistic, projection, layers
            )
    rows = cache.samples(info.id, sort_by="index", descending=False)
    variables[LOSS] = {row.index: row.loss for row in rows}
    lengths = {row.index: float(row.response_tokens) for row in rows if row.response_tokens >= 0}
    if lengths:
        variables[LENGTH] = lengths
    for name, values in sorted(sample_fields(cache, info).items()):
        if name not in variables:
            variables[name] = values
    return variables


def spearman(
    first: str,
    x: Mapping[int, float],
    second: str,
    y: Mapping[int, float],
) -> Correlation:
    """Spearman's rho (scipy.stats.spearmanr) over the samples with finite values on both
    sides; NaN with fewer than 3 such samples or when one side is constant."""
    common = [i for i in sorted(x) if i in y and math.isfinite(x[i]) and math.isfinite(y[i])]
    xs = [x[i] for i in common]
    ys = [y[i] for i in common]
    if len(common) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return Correlation(first, second, math.nan, math.nan, len(common))
    from scipy import stats  # only when a correlation is asked for

    result = stats.spearmanr(xs, ys)
    return Correlation(first, second, float(result.statistic), float(result.pvalue), len(common))


def correlations(
    variables: Mapping[str, Mapping[int, float]], rows: Sequence[str] | None = None
) -> list[Correlation]:
    """Spearman correlations of each variable in ``rows`` (default: all) with every later
    variable and every variable not in ``rows``: each unordered pair once."""
    names = list(variables)
    chosen = list(rows) if rows is not None else names
    seen: set[frozenset[str]] = set()
    found = []
    for first in chosen:
        for second in names:
            pair = frozenset((first, second))
            if first == second or pair in seen:
                continue
            seen.add(pair)
            found.append(spearman(first, variables[first], second, variables[second]))
    return found


def select_samples(
    cache: ResultsCache,
    info: RunInfo,
    statistic: str,
    count: int,
    end: End = "top",
    projection: str | None = None,
    layers: tuple[int, int] | None = None,
) -> Selection:
    """The ``count`` samples with the highest (``top``) or lowest (``bottom``) mean of a
    statistic (or ``loss``/``response_tokens``) over ``layers`` of one projection (all by
    default); samples whose value is not finite are never chosen; ties go to the lower index."""
    if count < 1:
        raise QueryError(
            f"{mention('top')}/{mention('bottom')}: need at least 1 sample, got {count}"
        )
    if statistic in (LOSS, LENGTH):
        rows = cache.samples(info.id, sort_by="index", descending=False)
        values = {
            r.index: (r.loss if statistic == LOSS else float(r.response_tokens))
            for r in rows
            if statistic == LOSS or r.response_tokens >= 0
        }
    else:
        values = cache.sample_means(info.id, statistic, projection, layers)
    finite = [(i, v) for i, v in values.items() if math.isfinite(v)]
    sign = -1.0 if end == "top" else 1.0
    finite.sort(key=lambda item: (sign * item[1], item[0]))
    chosen = finite[:count]
    where = statistic_variable(statistic, projection)
    if layers is not None:
        where += f", layers {layers[0]}-{layers[1]}"
    return Selection(
        run_id=info.id,
        statistic=statistic,
        projection=projection,
        layers=layers,
        end=end,
        indices=tuple(i for i, _v in chosen),
        values=tuple(v for _i, v in chosen),
        candidates=len(finite),
        describe=f"{end} {len(chosen)} of {len(finite)} samples by {where}",
    )


def write_selection(
    info: RunInfo,
    selection: Selection,
    destination: Path | str,
    protected: Mapping[Path, str],
    *,
    force: bool = False,
) -> int:
    """Write the selected samples' records, as the run's data file has them, to
    ``destination`` (JSON lines when it ends in .jsonl, else a JSON array), in selection
    order; returns how many. The file is published whole or not at all
    (:func:`~layerscope.analysis.base.outputs.open_output`)."""
    return write_records(info, selection.indices, destination, protected, force=force)


def write_records(
    info: RunInfo,
    indices: Sequence[int],
    destination: Path | str,
    protected: Mapping[Path, str],
    *,
    force: bool = False,
) -> int:
    """Write the records of the run's data file at ``indices`` (in that order) to
    ``destination``, as :func:`write_selection` does; returns how many."""
    records = run_records(info)
    chosen = [records[i] for i in indices if 0 <= i < len(records)]
    if str(destination).lower().endswith(".jsonl"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
    else:
        text = json.dumps(chosen, ensure_ascii=False, indent=2) + "\n"
    with open_output(destination, protected, force=force) as handle:
        handle.write(text.encode("utf-8"))
    return len(chosen)
