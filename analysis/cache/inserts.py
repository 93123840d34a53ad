"""Bulk SQL for one batch: its samples, statistics rows, spectra, skipped samples, and the
running sums (per-layer curve sums, cosine sums) that let reads avoid scanning rows.

Why apart from :mod:`.writes`: ``writes`` decides what a batch means for the run (which
samples are new, which failures to replace) inside one transaction; this module only turns
records into column lists and inserts them, the part that must be fast (one statement per table
with one list parameter per column, instead of a row at a time). Table, column and type names
are this package's constants; values are always parameters.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from layerscope.analysis.base.records import (
    MATRIX_STATISTICS,
    MatrixStatistics,
    Sample,
    SampleResult,
)
from layerscope.analysis.cache.cosine_packing import packed_cosines_query

__all__ = ["add_cosines", "add_curve_sums", "insert_columns", "insert_results", "insert_skipped"]

# The tables a batch writes: the only table names insert_columns splices into SQL.
_TABLES = (
    "targets",
    "samples",
    "statistics",
    "spectra",
    "skipped",
    "cosine_sums",
    "sample_fields",
)


def tokens(count: int | None) -> int | None:
    """Token counts as stored: NULL when unknown (imported runs pass -1)."""
    return None if count is None or count < 0 else int(count)


def insert_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: Mapping[str, tuple[str, list[Any]]]
) -> None:
    """Insert rows given column by column, as one statement with one list parameter per column.

    Much faster than ``executemany`` (DuckDB unnests the lists in bulk). Table, column and type
    names are constants of this package (the table checked against ``_TABLES``); the values
    are parameters.
    """
    if table not in _TABLES:
        raise ValueError(f"not a table a batch writes: {table!r}")
    if not columns:
        return
    first = next(iter(columns.values()))[1]
    if not first:
        return
    names = ", ".join(f'"{name}"' for name in columns)
    selects = ", ".join(f"unnest(?::{sql_type}[])" for sql_type, _values in columns.values())
    con.execute(
        f"INSERT INTO {table} ({names}) SELECT {selects}",
        [values for _sql_type, values in columns.values()],
    )


def insert_skipped(
    con: duckdb.DuckDBPyConnection, run_no: int, rows: Sequence[tuple[int, str, str]]
) -> None:
    insert_columns(
        con,
        "skipped",
        {
            "run_no": ("INTEGER", [run_no] * len(rows)),
            "sample_index": ("INTEGER", [r[0] for r in rows]),
            "kind": ("VARCHAR", [r[1] for r in rows]),
            "reason": ("VARCHAR", [r[2] for r in rows]),
        },
    )


def insert_results(
    con: duckdb.DuckDBPyConnection,
    run_no: int,
    results: Sequence[SampleResult],
    samples_by_index: Mapping[int, Sample],
) -> None:
    if not results:
        return
    texts = [samples_by_index.get(r.index) for r in results]
    insert_columns(
        con,
        "samples",
        {
            "run_no": ("INTEGER", [run_no] * len(results)),
            "sample_index": ("INTEGER", [r.index for r in results]),
            "loss": ("DOUBLE", [float(r.loss) for r in results]),
            "prompt_tokens": ("INTEGER", [tokens(r.prompt_tokens) for r in results]),
            "response_tokens": ("INTEGER", [tokens(r.response_tokens) for r in results]),
            "instruction": ("VARCHAR", [s.instruction if s else "" for s in texts]),
            "input": ("VARCHAR", [s.input if s else "" for s in texts]),
            "output": ("VARCHAR", [s.output if s else "" for s in texts]),
        },
    )
    named = [
        (r.index, name, value)
        for r, s in zip(results, texts, strict=True)
        if s is not None
        for name, value in s.numeric_fields.items()
    ]
    insert_columns(
        con,
        "sample_fields",
        {
            "run_no": ("INTEGER", [run_no] * len(named)),
            "sample_index": ("INTEGER", [n[0] for n in named]),
            "name": ("VARCHAR", [n[1] for n in named]),
            "value": ("DOUBLE", [n[2] for n in named]),
        },
    )
    stat_values: dict[str, list[float | None]] = {name: [] for name in MATRIX_STATISTICS}
    sample_column: list[int] = []
    layer_column: list[int] = []
    projection_column: list[str] = []
    spectra: tuple[list[int], list[int], list[str], list[list[float | None]]] = ([], [], [], [])
    for result in results:
        for matrix in result.matrices:
            sample_column.append(result.index)
            layer_column.append(matrix.layer)
            projection_column.append(matrix.projection)
            for name in MATRIX_STATISTICS:
                value = matrix.values.get(name)
                stat_values[name].append(None if value is None else float(value))
            if matrix.spectrum is not None:
                spectra[0].append(result.index)
                spectra[1].append(matrix.layer)
                spectra[2].append(matrix.projection)
                spectra[3].append([None if v is None else float(v) for v in matrix.spectrum])
    rows = len(sample_column)
    insert_columns(
        con,
        "statistics",
        {
            "run_no": ("INTEGER", [run_no] * rows),
            "sample_index": ("INTEGER", sample_column),
            "layer": ("SMALLINT", layer_column),
            "projection": ("projection_name", projection_column),
            **{name: ("REAL", stat_values[name]) for name in MATRIX_STATISTICS},
        },
    )
    insert_columns(
        con,
        "spectra",
        {
            "run_no": ("INTEGER", [run_no] * len(spectra[0])),
            "sample_index": ("INTEGER", spectra[0]),
            "layer": ("SMALLINT", spectra[1]),
            "projection": ("projection_name", spectra[2]),
            "singular_values": ("REAL[]", spectra[3]),
        },
    )
    _insert_sample_cosines(con, run_no, results)


def _finite_or_nan(value: float | None) -> float:
    return math.nan if value is None or not math.isfinite(value) else float(value)


# One batch's cosine rows as the writer has them (a matrix row-major), for packed_cosines_query.
_SAMPLE_COSINES_ROWS = (
    "SELECT unnest(?::INTEGER[]) AS run_no, unnest(?::INTEGER[]) AS sample_index, "
    "unnest(?::VARCHAR[]) AS kind, unnest(?::VARCHAR[]) AS name, "
    "unnest(?::SMALLINT[][]) AS layers, unnest(?::REAL[][]) AS cosines"
)


def _insert_sample_cosines(
    con: duckdb.DuckDBPyConnection, run_no: int, results: Sequence[SampleResult]
) -> None:
    """Each sample's own cosines (``sample_cosines``): its layer-by-layer matrices and its q-o /
    k-v cosines, with the layers they are between (NaN where undefined), each matrix stored as
    the schema packs it (:func:`~.cosine_packing.packed_cosines_query`)."""
    rows: list[tuple[int, str, str, list[int], list[float]]] = []
    for result in results:
        for projection, matrix in result.layer_cosines.items():
            if matrix:
                layers = result.cosine_layers.get(projection) or list(range(len(matrix)))
                if len(layers) != len(matrix) or any(len(row) != len(matrix) for row in matrix):
                    raise ValueError(
                        f"sample {result.index}: the {projection} cosines are not a square "
                        f"matrix of its {len(layers)} layers"
                    )
                flat = [_finite_or_nan(v) for row in matrix for v in row]
                rows.append((result.index, "layers", projection, layers, flat))
        for pair, values in result.pair_cosines.items():
            if values:
                layers = result.cosine_layers.get(pair) or list(range(len(values)))
                rows.append(
                    (result.index, "pair", pair, layers, [_finite_or_nan(v) for v in values])
                )
    if not rows:
        return
    con.execute(
        f"INSERT INTO sample_cosines {packed_cosines_query(_SAMPLE_COSINES_ROWS)}",
        [[run_no] * len(rows), *(list(column) for column in zip(*rows, strict=True))],
    )


def add_curve_sums(
    con: duckdb.DuckDBPyConnection, run_no: int, results: Sequence[SampleResult]
) -> None:
    """Add the batch's samples to the run's per-layer sums of every statistic.

    Applies the paper's rule as the samples arrive: a sample whose statistic is not finite at
    some layer of a projection contributes nothing to that projection's curve and is counted in
    ``nonfinite_samples``. Values are rounded to float32 first, exactly as the statistics table
    stores them, so the sums agree with a scan of the rows.
    """
    if not results:
        return
    acc: dict[tuple[str, int, str], list[float]] = {}
    for result in results:
        by_projection: dict[str, list[MatrixStatistics]] = {}
        for matrix in result.matrices:
            by_projection.setdefault(matrix.projection, []).append(matrix)
        for projection, matrices in by_projection.items():
            for name in MATRIX_STATISTICS:
                raw = [(m.layer, m.values.get(name)) for m in matrices]
                present = [(layer, v) for layer, v in raw if v is not None]
                rounded = array("f", [float(v) for _layer, v in present])
                for layer, _v in raw:  # a statistic absent here still has a (0-sample) curve
                    acc.setdefault((projection, layer, name), [0, 0.0, 0.0, 0])
                if all(math.isfinite(v) for v in rounded):
                    for (layer, _v), value in zip(present, rounded, strict=True):
                        entry = acc.setdefault((projection, layer, name), [0, 0.0, 0.0, 0])
                        entry[0] += 1
                        entry[1] += value
                        entry[2] += value * value
                else:
                    for layer, _v in raw:
                        acc.setdefault((projection, layer, name), [0, 0.0, 0.0, 0])[3] += 1
    keys = list(acc)
    con.execute(
        "INSERT INTO curve_sums SELECT unnest(?::INTEGER[]), unnest(?::VARCHAR[]), "
        "unnest(?::SMALLINT[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), unnest(?::DOUBLE[]), "
        "unnest(?::DOUBLE[]), unnest(?::BIGINT[]) ON CONFLICT DO UPDATE SET "
        "samples = samples + excluded.samples, total = total + excluded.total, "
        "squares = squares + excluded.squares, "
        "nonfinite_samples = nonfinite_samples + excluded.nonfinite_samples",
        [
            [run_no] * len(keys),
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [int(acc[k][0]) for k in keys],
            [acc[k][1] for k in keys],
            [acc[k][2] for k in keys],
            [int(acc[k][3]) for k in keys],
        ],
    )


def add_cosines(
    con: duckdb.DuckDBPyConnection, run_no: int, results: Sequence[SampleResult]
) -> None:
    """Add the batch's cosines to the run's running sums (one row per matrix kind and name).

    Layer-by-layer matrices are summed cell by cell (row-major, ``size`` = L); pair cosines
    (q-o, k-v) layer by layer (``size`` = L). Non-finite cosines are not counted.
    """
    import numpy as np  # a dependency of transformers; only needed when writing cosines

    sums: dict[tuple[str, str], tuple[int, Any, Any]] = {}

    def add(kind: str, name: str, size: int, values: Any) -> None:
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size != (size * size if kind == "layers" else size):
            return
        finite = np.isfinite(array)
        key = (kind, name)
        if key not in sums:
            sums[key] = (size, np.zeros(array.size), np.zeros(array.size, dtype=np.int64))
        known, totals, counts = sums[key]
        if known == size:
            totals += np.where(finite, array, 0.0)
            counts += finite

    for result in results:
        for projection, matrix in result.layer_cosines.items():
            if matrix:
                add("layers", projection, len(matrix), matrix)
        for pair, values in result.pair_cosines.items():
            if values:
                add("pair", pair, len(values), values)
    if not sums:
        return
    stored = con.execute(
        "SELECT kind, name, size, totals, counts FROM cosine_sums WHERE run_no = ?", [run_no]
    ).fetchall()
    merged = {(kind, name): (size, totals, counts) for kind, name, size, totals, counts in stored}
    for key, (size, totals, counts) in sums.items():
        old = merged.get(key)
        if old is not None and old[0] == size and len(old[1]) == len(totals):
            totals = totals + np.asarray(old[1], dtype=np.float64)
            counts = counts + np.asarray(old[2], dtype=np.int64)
        merged[key] = (size, totals.tolist(), counts.tolist())
    con.execute("DELETE FROM cosine_sums WHERE run_no = ?", [run_no])
    keys = list(merged)
    insert_columns(
        con,
        "cosine_sums",
        {
            "run_no": ("INTEGER", [run_no] * len(keys)),
            "kind": ("VARCHAR", [k[0] for k in keys]),
            "name": ("VARCHAR", [k[1] for k in keys]),
            "size": ("INTEGER", [merged[k][0] for k in keys]),
            "totals": ("DOUBLE[]", [list(merged[k][1]) for k in keys]),
            "counts": ("INTEGER[]", [list(merged[k][2]) for k in keys]),
        },
    )
