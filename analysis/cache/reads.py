"""Reading one run's stored rows: its matrices, samples, one sample's curve and spectra, cosine
means, and what was skipped.

Why these together: each is one short read-only query on one run, resolved by id or prefix
(:mod:`.runs`), answered from a fresh connection so that a reader sees every batch the moment
it commits and never holds the file while a writer waits. The curves' sums have their own
module (:mod:`.aggregates`); bulk reads for exports are in :mod:`.exports`.
"""

from __future__ import annotations

import math
from typing import Any

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.base.records import MATRIX_STATISTICS, SampleRow, SkippedSample, TargetInfo
from layerscope.analysis.cache.aggregates import token_range
from layerscope.analysis.cache.connection import CacheFile
from layerscope.analysis.cache.runs import resolve, run_rows

__all__ = [
    "SAMPLE_SORT_KEYS",
    "done_indices",
    "layer_cosines",
    "pair_cosines",
    "sample_curve",
    "sample_fields",
    "sample_means",
    "sample_spectra",
    "samples",
    "shared_samples",
    "skipped",
    "spectrum_by_rank",
    "targets",
]

SAMPLE_SORT_KEYS = ("index", "loss", "prompt_tokens", "response_tokens", *MATRIX_STATISTICS)


def as_float(value: Any) -> float:
    """A stored REAL/DOUBLE: NaN where NULL."""
    return math.nan if value is None else float(value)


def as_count(value: Any) -> int:
    """Token counts as returned: -1 when unknown."""
    return -1 if value is None else int(value)


def targets(file: CacheFile, run_id: str) -> list[TargetInfo]:
    """The run's measured matrices with the model's parameter names."""
    _info, rows = run_rows(
        file,
        run_id,
        "SELECT layer, projection::VARCHAR, parameter, rows, cols FROM targets "
        "WHERE run_no = ? ORDER BY layer, projection",
    )
    return [TargetInfo(int(a), b, c, int(d), int(e)) for a, b, c, d, e in rows]


def done_indices(file: CacheFile, run_id: str) -> set[int]:
    """Indices that need no computing: stored samples and deliberately skipped ones
    (failed samples are retried). Empty for a run that does not exist yet."""
    with file.reading() as con:
        if con is None:
            return set()
        rows = con.execute(
            "SELECT s.sample_index FROM samples s JOIN runs r USING (run_no) WHERE r.id = ? "
            "UNION ALL SELECT k.sample_index FROM skipped k JOIN runs r USING (run_no) "
            "WHERE r.id = ? AND k.kind = 'skipped'",
            [run_id, run_id],
        ).fetchall()
    return {int(r[0]) for r in rows}


def _samples_query(sort_by: str, descending: bool) -> str:
    """The samples query sorted by ``sort_by`` (one of SAMPLE_SORT_KEYS: it names a column)."""
    means = ", ".join(f'avg(t."{s}") AS "{s}"' for s in MATRIX_STATISTICS)
    stat_columns = ", ".join(f'm."{s}"' for s in MATRIX_STATISTICS)
    if sort_by in MATRIX_STATISTICS or sort_by == "loss":
        # NaN sorts above every number in DuckDB: send it after the numbers, with NULLs
        order = f'(CASE WHEN isnan("{sort_by}") THEN NULL ELSE "{sort_by}" END)'
    else:
        order = "sample_index" if sort_by == "index" else f'"{sort_by}"'
    direction = "DESC" if descending else "ASC"
    return f"""
        WITH m AS (
            SELECT t.sample_index, {means} FROM statistics t WHERE t.run_no = $run
            GROUP BY t.sample_index
        )
        SELECT s.sample_index, s.loss, s.prompt_tokens, s.response_tokens, s.instruction,
               s.output, {stat_columns}
        FROM samples s LEFT JOIN m USING (sample_index)
        WHERE s.run_no = $run
          AND ($all_lengths OR s.response_tokens BETWEEN $low AND $high)
        ORDER BY {order} {direction} NULLS LAST,
                 sample_index
        LIMIT $limit
    """  # noqa: S608 (identifiers from SAMPLE_SORT_KEYS, values are parameters)


def samples(
    file: CacheFile,
    run_id: str,
    sort_by: str = "loss",
    descending: bool = True,
    limit: int | None = None,
    response_tokens: tuple[int, int] | None = None,
) -> list[SampleRow]:
    """The run's samples with per-sample means (over layers and projections) of each
    statistic, sorted by ``sort_by`` (index, loss, token counts or a statistic); NaN last."""
    if sort_by not in SAMPLE_SORT_KEYS:
        raise QueryError(f"cannot sort by {sort_by!r}; choose one of {', '.join(SAMPLE_SORT_KEYS)}")
    low, high = token_range(response_tokens)
    query = _samples_query(sort_by, descending)
    with file.reading() as con:
        run_no, _info = resolve(con, file.path, run_id)
        assert con is not None
        rows = con.execute(
            query,
            {
                "run": run_no,
                "all_lengths": response_tokens is None,
                "low": low,
                "high": high,
                "limit": limit if limit else 2**62,
            },
        ).fetchall()
    result = []
    for row in rows:
        stats = {
            name: as_float(value) for name, value in zip(MATRIX_STATISTICS, row[6:], strict=True)
        }
        result.append(
            SampleRow(
                index=int(row[0]),
                loss=as_float(row[1]),
                prompt_tokens=as_count(row[2]),
                response_tokens=as_count(row[3]),
                instruction=row[4] or "",
                output=row[5] or "",
                stats=stats,
            )
        )
    return result


def sample_curve(
    file: CacheFile, run_id: str, index: int, metric: str, projection: str
) -> list[float]:
    """One sample's statistic by layer for one projection (NaN where not stored)."""
    if metric not in MATRIX_STATISTICS:
        raise QueryError(
            f"unknown statistic {metric!r}; choose one of {', '.join(MATRIX_STATISTICS)}"
        )
    query = (
        f'SELECT layer, "{metric}" FROM statistics '  # noqa: S608 (metric checked above)
        "WHERE run_no = ? AND sample_index = ? AND projection = ? ORDER BY layer"
    )
    info, rows = run_rows(file, run_id, query, [index, projection])
    if projection not in info.projections:
        raise QueryError(f"run {info.short_id} has no projection {projection!r}")
    values = [math.nan] * info.layers
    for layer, value in rows:
        if 0 <= layer < len(values):
            values[layer] = as_float(value)
    return values


def sample_spectra(file: CacheFile, run_id: str, index: int, projection: str) -> list[list[float]]:
    """One sample's singular values by layer (empty lists when spectra were not kept; NaN for
    a value stored as empty)."""
    info, rows = run_rows(
        file,
        run_id,
        "SELECT layer, singular_values FROM spectra "
        "WHERE run_no = ? AND sample_index = ? AND projection = ? ORDER BY layer",
        [index, projection],
    )
    spectra: list[list[float]] = [[] for _ in range(info.layers)]
    for layer, values in rows:
        if 0 <= layer < len(spectra):
            spectra[layer] = [as_float(v) for v in values]
    return spectra


# Each stored spectrum sorted descending (finite values only), then averaged rank by rank.
_SPECTRUM_BY_RANK = """
    SELECT layer, rank, avg(value), count(*) FROM (
        SELECT layer, value, row_number() OVER (
            PARTITION BY sample_index, layer ORDER BY value DESC
        ) AS rank
        FROM (
            SELECT sample_index, layer, UNNEST(singular_values)::DOUBLE AS value
            FROM spectra WHERE run_no = ? AND projection = ?
        )
        WHERE value IS NOT NULL AND isfinite(value)
    )
    GROUP BY layer, rank ORDER BY layer, rank
"""


def spectrum_by_rank(
    file: CacheFile, run_id: str, projection: str
) -> dict[int, list[tuple[float, int]]]:
    """Per layer, the mean over samples of the k-th largest singular value for k = 1, 2, ...,
    with how many samples have a k-th value: ``{layer: [(mean, samples), ...]}`` (empty when
    the run kept no spectra for this projection)."""
    info, rows = run_rows(file, run_id, _SPECTRUM_BY_RANK, [projection])
    if projection not in info.projections:
        raise QueryError(f"run {info.short_id} has no projection {projection!r}")
    by_layer: dict[int, list[tuple[float, int]]] = {}
    for layer, _rank, mean, count in rows:
        by_layer.setdefault(int(layer), []).append((float(mean), int(count)))
    return by_layer


def _cosine_sums(
    file: CacheFile, run_id: str, kind: str, name: str
) -> tuple[int, list, list] | None:
    _info, rows = run_rows(
        file,
        run_id,
        "SELECT size, totals, counts FROM cosine_sums WHERE run_no = ? AND kind = ? AND name = ?",
        [kind, name],
    )
    return (int(rows[0][0]), list(rows[0][1]), list(rows[0][2])) if rows else None


def layer_cosines(file: CacheFile, run_id: str, projection: str) -> list[list[float]]:
    """Mean over samples of the L x L cosine similarity between layers' gradients
    (empty when the run has none for this projection; NaN in cells no sample had)."""
    sums = _cosine_sums(file, run_id, "layers", projection)
    if sums is None:
        return []
    size, totals, counts = sums
    means = [t / c if c else math.nan for t, c in zip(totals, counts, strict=True)]
    return [means[i * size : (i + 1) * size] for i in range(size)]


def pair_cosines(file: CacheFile, run_id: str, pair: str) -> list[float]:
    """Mean over samples of the per-layer cosine between two projections' gradients
    (pair "q-o" or "k-v"; empty when not measured)."""
    sums = _cosine_sums(file, run_id, "pair", pair)
    if sums is None:
        return []
    _size, totals, counts = sums
    return [t / c if c else math.nan for t, c in zip(totals, counts, strict=True)]


def sample_fields(file: CacheFile, run_id: str) -> dict[str, dict[int, float]]:
    """The run's samples' own numeric fields from their data file: name -> {index: value}
    (empty for runs stored before the cache kept them, and for imported runs)."""
    _info, rows = run_rows(
        file,
        run_id,
        "SELECT name, sample_index, value FROM sample_fields WHERE run_no = ? "
        "ORDER BY name, sample_index",
    )
    fields: dict[str, dict[int, float]] = {}
    for name, index, value in rows:
        fields.setdefault(str(name), {})[int(index)] = float(value)
    return fields


def sample_means(
    file: CacheFile,
    run_id: str,
    statistic: str,
    projection: str | None = None,
    layers: tuple[int, int] | None = None,
) -> dict[int, float]:
    """Per sample, the mean of one statistic (one of MATRIX_STATISTICS) over the layers
    ``layers`` (inclusive, 0-based; all by default) of one projection (all by default):
    index -> value, NaN where a value in the range is not finite."""
    if statistic not in MATRIX_STATISTICS:
        raise QueryError(f"unknown statistic {statistic!r}")
    low, high = layers if layers is not None else (0, 2**15 - 1)
    column = f'"{statistic}"'
    query = f"""
        SELECT sample_index,
               CASE WHEN bool_and(isfinite({column})) THEN avg({column}::DOUBLE)
                    ELSE 'nan'::DOUBLE END
        FROM statistics
        WHERE run_no = ? AND (? OR projection::VARCHAR = ?) AND layer BETWEEN ? AND ?
        GROUP BY sample_index ORDER BY sample_index
    """  # noqa: S608 (column name from MATRIX_STATISTICS, checked above; values are parameters)
    _info, rows = run_rows(file, run_id, query, [projection is None, projection or "", low, high])
    return {int(index): as_float(value) for index, value in rows}


def skipped(file: CacheFile, run_id: str) -> list[SkippedSample]:
    """Samples that were not measured (skipped or failed), with their reasons."""
    _info, rows = run_rows(
        file,
        run_id,
        "SELECT sample_index, kind, reason FROM skipped WHERE run_no = ? ORDER BY sample_index",
    )
    return [
        SkippedSample(int(i), reason if kind == "skipped" else f"failed: {reason}")
        for i, kind, reason in rows
    ]


def shared_samples(file: CacheFile, run_a: str, run_b: str) -> tuple[int, int]:
    """How many sample indices two runs both stored, and how many of those have the same
    prompt (instruction and input) in both: the evidence that they measured the same
    questions, which a paired test between them needs."""
    with file.reading() as con:
        no_a, _info = resolve(con, file.path, run_a)
        no_b, _info = resolve(con, file.path, run_b)
        assert con is not None
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE a.instruction IS NOT DISTINCT FROM "
            "b.instruction AND a.input IS NOT DISTINCT FROM b.input) "
            "FROM samples a JOIN samples b USING (sample_index) "
            "WHERE a.run_no = ? AND b.run_no = ?",
            [no_a, no_b],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
