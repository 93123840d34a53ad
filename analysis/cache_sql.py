"""The SQL behind the results cache: storing a batch and aggregating statistics.

Why apart from :mod:`cache`: that module decides when and how the file is opened (short-lived
connections, locks, transactions); this one only talks SQL on a connection it is given, so each
stays small. Table, column and type names come from this package's constants; values are always
parameters.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from layerscope.analysis.records import (
    MATRIX_STATISTICS,
    MatrixStatistics,
    Sample,
    SampleResult,
)

# projection -> layer -> (count, sum, sum of squares) of the values a curve averages
Sums = dict[str, dict[int, tuple[int, float, float]]]


# ---- aggregation ------------------------------------------------------------------------------


def scanned_sums(
    con: duckdb.DuckDBPyConnection, run_no: int, metric: str, low: int | None, high: int | None
) -> tuple[Sums, dict[str, int]]:
    """Per-projection, per-layer sums of one statistic, from one scan of the statistics rows
    (restricted to samples with ``low``..``high`` response tokens unless both are None), and
    per projection the number of samples left out for a non-finite value.

    The paper leaves out a sample whose statistic is not finite at any layer. Doing that with
    an anti-join costs a hash probe per row; instead one scan sums count, sum and sum of
    squares of the finite values per (projection, layer), a filtered scan finds the (rare)
    non-finite (projection, sample) pairs, and the finite values of those samples are then
    subtracted. Standard deviations come from the sums in double precision, ample for float32
    statistics whose spread is not many orders of magnitude below their mean.
    """
    column = f'"{metric}"'  # metric is one of MATRIX_STATISTICS (checked by the caller)
    unfiltered = low is None and high is None
    length_filter = (
        ""
        if unfiltered
        else "AND t.sample_index IN (SELECT sample_index FROM samples WHERE run_no = $run "
        "AND response_tokens BETWEEN $low AND $high)"
    )
    params: dict[str, Any] = {"run": run_no}
    if not unfiltered:
        params.update(low=low, high=high)
    value = f"CASE WHEN isfinite(t.{column}) THEN t.{column}::DOUBLE END"
    sums_query = f"""
        SELECT t.projection::VARCHAR, t.layer, count(v), sum(v), sum(v * v)
        FROM (SELECT t.projection, t.layer, {value} AS v FROM statistics t
              WHERE t.run_no = $run {length_filter}) t
        GROUP BY ALL
    """  # noqa: S608 (identifier from MATRIX_STATISTICS, values are parameters)
    bad_query = f"""
        SELECT DISTINCT t.projection::VARCHAR, t.sample_index FROM statistics t
        WHERE t.run_no = $run AND NOT isfinite(t.{column}) {length_filter}
    """  # noqa: S608 (identifier from MATRIX_STATISTICS, values are parameters)
    sums: dict[str, dict[int, list[float]]] = {}
    for projection, layer, count, total, squares in con.execute(sums_query, params).fetchall():
        sums.setdefault(projection, {})[int(layer)] = [count, total or 0.0, squares or 0.0]
    bad = {(p, int(i)) for p, i in con.execute(bad_query, params).fetchall()}
    if bad:
        correction_query = f"""
            SELECT t.projection::VARCHAR, t.sample_index, t.layer, {value}
            FROM statistics t
            WHERE t.run_no = $run AND t.sample_index = ANY($bad::INTEGER[])
        """  # noqa: S608 (identifier from MATRIX_STATISTICS, values are parameters)
        rows = con.execute(
            correction_query, {"run": run_no, "bad": sorted({i for _p, i in bad})}
        ).fetchall()
        for projection, index, layer, finite in rows:
            if (projection, int(index)) in bad and finite is not None:
                entry = sums[projection][int(layer)]
                entry[0] -= 1
                entry[1] -= finite
                entry[2] -= finite * finite
    excluded: dict[str, int] = {}
    for projection, _index in bad:
        excluded[projection] = excluded.get(projection, 0) + 1
    result = {
        projection: {layer: (int(c), t, q) for layer, (c, t, q) in per_layer.items()}
        for projection, per_layer in sums.items()
    }
    return result, excluded


def stored_sums(
    con: duckdb.DuckDBPyConnection, run_no: int, metric: str
) -> tuple[Sums, dict[str, int]]:
    """The same sums as ``scanned_sums`` over all samples, as every batch keeps them in
    ``curve_sums`` (no row scan)."""
    rows = con.execute(
        "SELECT projection, layer, samples, total, squares, nonfinite_samples FROM curve_sums "
        "WHERE run_no = ? AND statistic = ?",
        [run_no, metric],
    ).fetchall()
    sums: Sums = {}
    excluded: dict[str, int] = {}
    for projection, layer, count, total, squares, nonfinite in rows:
        sums.setdefault(projection, {})[int(layer)] = (int(count), total, squares)
        excluded[projection] = max(excluded.get(projection, 0), int(nonfinite))
    return sums, excluded


def loss_sums(
    con: duckdb.DuckDBPyConnection, run_no: int, low: int | None, high: int | None
) -> tuple[int, float, float, int]:
    """Count, sum and sum of squares of the finite losses, and the number of others."""
    row = con.execute(
        "SELECT count(loss) FILTER (WHERE isfinite(loss)), sum(loss) FILTER (WHERE isfinite(loss)), "
        "sum(loss * loss) FILTER (WHERE isfinite(loss)), "
        "count(*) FILTER (WHERE NOT isfinite(loss)) "
        "FROM samples WHERE run_no = ? AND (? OR response_tokens BETWEEN ? AND ?)",
        [run_no, low is None and high is None, low or 0, high or 0],
    ).fetchone()
    assert row is not None
    count, total, squares, excluded = row
    return int(count), total or 0.0, squares or 0.0, int(excluded or 0)


# ---- writing ----------------------------------------------------------------------------------


def tokens(count: int | None) -> int | None:
    """Token counts as stored: NULL when unknown (imported runs pass -1)."""
    return None if count is None or count < 0 else int(count)


def insert_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: Mapping[str, tuple[str, list[Any]]]
) -> None:
    """Insert rows given column by column, as one statement with one list parameter per column.

    Much faster than ``executemany`` (DuckDB unnests the lists in bulk). Table, column and type
    names are constants of this module; the values are parameters.
    """
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
    stat_values: dict[str, list[float | None]] = {name: [] for name in MATRIX_STATISTICS}
    sample_column: list[int] = []
    layer_column: list[int] = []
    projection_column: list[str] = []
    spectra: tuple[list[int], list[int], list[str], list[list[float]]] = ([], [], [], [])
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
                spectra[3].append([float(v) for v in matrix.spectrum])
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
