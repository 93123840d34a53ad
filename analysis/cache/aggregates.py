"""Sums behind every curve: count, sum and sum of squares of a statistic by layer.

Why apart from the other reads: this is the one hot path of browsing (``show``, ``check``, the
TUI's charts on 32 million rows), so its SQL is tuned and documented here in one place: without
length control the sums come from ``curve_sums``, which every batch keeps up to date (O(layers),
no row scan); with length control from one scan of the statistics rows. Either way the cache
returns sums (:class:`~layerscope.analysis.base.records.LayerSums`); turning them into means,
standard deviations and confidence intervals is :mod:`layerscope.analysis.curves.statistics`' job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.base.records import ADJACENT_COSINE, METRICS, PROJECTIONS, LayerSums
from layerscope.analysis.cache import runs
from layerscope.analysis.cache.connection import CacheFile
from layerscope.analysis.cache.cosine_packing import cosine_cell

__all__ = ["curve_sums", "sample_values", "token_range"]

# projection -> layer -> (count, sum, sum of squares) of the values a curve averages
Sums = dict[str, dict[int, tuple[int, float, float]]]
# A sample's cosine between layers i - 1 and i of a projection (at 1-based position i of its
# n layers): its matrix's cell above the diagonal, read where the schema stores it.
_ADJACENT_CELL = f"cells[{cosine_cell('i - 1', 'i', 'n')}]::DOUBLE"


def token_range(response_tokens: tuple[int, int] | None) -> tuple[int, int]:
    """An inclusive response-length range as SQL bounds (everything when None)."""
    if response_tokens is None:
        return (-(2**31), 2**31 - 1)
    low, high = response_tokens
    if low > high:
        raise QueryError(f"response token range {low}-{high} is empty")
    return int(low), int(high)


def curve_sums(
    file: CacheFile,
    run_ids: Sequence[str],
    metric: str,
    projections: Sequence[str] | None = None,
    response_tokens: tuple[int, int] | None = None,
) -> list[LayerSums]:
    """Per run and projection, the sums of ``metric`` by layer (see ``ResultsCache.curves``),
    in the order of ``run_ids``, then projections in q, k, v, o, gate, up, down order."""
    if metric not in METRICS:
        raise QueryError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    wanted = tuple(projections) if projections else None
    if wanted:
        unknown = [p for p in wanted if p not in PROJECTIONS]
        if unknown:
            raise QueryError(
                f"unknown projection {unknown[0]!r}; choose from {', '.join(PROJECTIONS)}"
            )
    low, high = token_range(response_tokens) if response_tokens else (None, None)
    result: list[LayerSums] = []
    with file.reading() as con:
        for run_id in run_ids:
            run_no, info = runs.resolve(con, file.path, run_id)
            assert con is not None
            if metric == "loss":
                count, total, squares, excluded = loss_sums(con, run_no, low, high)
                result.append(LayerSums(info.id, "loss", {0: (count, total, squares)}, excluded))
                continue
            if metric == ADJACENT_COSINE:
                by_projection, nonfinite = adjacent_cosine_sums(con, run_no, low, high)
            elif response_tokens is None:
                by_projection, nonfinite = stored_sums(con, run_no, metric)
            else:
                by_projection, nonfinite = scanned_sums(con, run_no, metric, low, high)
            result.extend(
                LayerSums(info.id, p, by_projection[p], nonfinite.get(p, 0))
                for p in PROJECTIONS
                if p in by_projection and (not wanted or p in wanted)
            )
    return result


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


def adjacent_cosine_sums(
    con: duckdb.DuckDBPyConnection, run_no: int, low: int | None, high: int | None
) -> tuple[Sums, dict[str, int]]:
    """Per projection and layer i, the sums of each sample's cosine between layers i and i + 1
    (its layer-by-layer matrix's ``[i][i+1]``, from ``sample_cosines``), with the paper's rule
    of the other statistics: a sample with an undefined cosine at some layer of a projection
    is left out of that projection's curve and counted. Restricted to ``low``..``high``
    response tokens unless both are None. Runs without per-sample cosines (computed without
    them, or stored before schema version 4) have no such curve."""
    unfiltered = low is None and high is None
    length_filter = (
        ""
        if unfiltered
        else "AND sample_index IN (SELECT sample_index FROM samples WHERE run_no = $run "
        "AND response_tokens BETWEEN $low AND $high)"
    )
    params: dict[str, Any] = {"run": run_no}
    if not unfiltered:
        params.update(low=low, high=high)
    # Lists are 1-based: at position i, layers[i] and the cell [i - 1][i] above the diagonal.
    query = f"""
        WITH positions AS (
            SELECT name AS projection, sample_index, layers, cells, len(layers) AS n,
                   unnest(range(1, len(layers))) AS i
            FROM sample_cosines
            WHERE run_no = $run AND kind = 'layers' {length_filter}
        ),
        adjacent AS (
            SELECT projection, sample_index, layers[i] AS layer, {_ADJACENT_CELL} AS v
            FROM positions
        ),
        flagged AS (
            SELECT projection, sample_index, bool_and(coalesce(isfinite(v), false)) AS ok
            FROM adjacent GROUP BY ALL
        )
        SELECT c.projection, c.layer, count(*) FILTER (WHERE f.ok),
               coalesce(sum(c.v) FILTER (WHERE f.ok), 0),
               coalesce(sum(c.v * c.v) FILTER (WHERE f.ok), 0),
               count(*) FILTER (WHERE NOT f.ok)
        FROM adjacent c JOIN flagged f USING (projection, sample_index)
        GROUP BY ALL
    """  # noqa: S608 (the filter is a constant; values are parameters)
    sums: Sums = {}
    excluded: dict[str, int] = {}
    for projection, layer, count, total, squares, bad in con.execute(query, params).fetchall():
        sums.setdefault(projection, {})[int(layer)] = (int(count), float(total), float(squares))
        excluded[projection] = max(excluded.get(projection, 0), int(bad))
    return sums, excluded


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


def sample_values(
    file: CacheFile,
    run_id: str,
    metric: str,
    projections: Sequence[str] | None = None,
    response_tokens: tuple[int, int] | None = None,
) -> dict[str, dict[int, list[float]]]:
    """Per projection, each sample's value of ``metric`` by layer (NaN where not stored or not
    finite): what a paired test between two runs needs. For ``loss``, projection ``"loss"``
    with one value per sample; for the adjacent-layer cosine, each sample's own cosines. Restricted by response length like ``curve_sums``."""
    if metric not in METRICS:
        raise QueryError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    low, high = token_range(response_tokens)
    wanted = tuple(projections) if projections else PROJECTIONS
    with file.reading() as con:
        run_no, info = runs.resolve(con, file.path, run_id)
        assert con is not None
        if metric == "loss":
            rows = con.execute(
                "SELECT sample_index, loss FROM samples WHERE run_no = ? "
                "AND (? OR response_tokens BETWEEN ? AND ?)",
                [run_no, response_tokens is None, low, high],
            ).fetchall()
            return {"loss": {int(i): [_finite_or_nan(v)] for i, v in rows}}
        if metric == ADJACENT_COSINE:  # each sample's matrix[i][i+1], at layer i
            query = f"""
                WITH positions AS (
                    SELECT c.name AS projection, c.sample_index, c.layers, c.cells,
                           len(c.layers) AS n, unnest(range(1, len(c.layers))) AS i
                    FROM sample_cosines c JOIN samples s USING (run_no, sample_index)
                    WHERE c.run_no = $run AND c.kind = 'layers'
                      AND c.name = ANY($wanted::VARCHAR[])
                      AND ($all_lengths OR s.response_tokens BETWEEN $low AND $high)
                )
                SELECT projection, sample_index, layers[i], {_ADJACENT_CELL}
                FROM positions
            """  # noqa: S608 (the schema's constant SQL, values are parameters)
        else:
            query = f"""
                SELECT t.projection::VARCHAR, t.sample_index, t.layer, t."{metric}"::DOUBLE
                FROM statistics t JOIN samples s USING (run_no, sample_index)
                WHERE t.run_no = $run AND t.projection::VARCHAR = ANY($wanted::VARCHAR[])
                  AND ($all_lengths OR s.response_tokens BETWEEN $low AND $high)
            """  # noqa: S608 (metric is one of MATRIX_STATISTICS, checked above)
        params = {
            "run": run_no,
            "wanted": list(wanted),
            "all_lengths": response_tokens is None,
            "low": low,
            "high": high,
        }
        columns = con.execute(query, params).fetchnumpy()
    return _by_projection_and_sample(columns, info.layers)


def _by_projection_and_sample(
    columns: dict[str, Any], layers: int
) -> dict[str, dict[int, list[float]]]:
    """Rows of (projection, sample, layer, value) as each projection's per-sample values by
    layer, NaN where not stored or not finite. In numpy: a study's pair reads 120,000 rows,
    and a loop over them in Python was a seventh of a first ``show``'s CPU."""
    import numpy as np  # the cache's reads need it only here

    projection, index, layer, stored = columns.values()
    # a NULL value comes as a masked entry
    value = np.where(np.ma.getmaskarray(stored), np.nan, np.ma.getdata(stored)).astype(np.float64)
    projection = np.asarray(projection)
    index = np.asarray(index)
    value[~np.isfinite(value)] = np.nan
    layer = np.asarray(layer, dtype=np.int64)
    inside = (layer >= 0) & (layer < layers)
    result: dict[str, dict[int, list[float]]] = {}
    for name in PROJECTIONS:
        rows = projection == name
        if not rows.any():
            continue
        samples, position = np.unique(np.asarray(index[rows], dtype=np.int64), return_inverse=True)
        matrix = np.full((len(samples), layers), np.nan)
        kept = inside[rows]
        matrix[position[kept], layer[rows][kept]] = value[rows][kept]
        result[name] = dict(zip(samples.tolist(), matrix.tolist(), strict=True))
    return result


def _finite_or_nan(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan
