"""A run's stored samples read back whole: as the batch writer takes them, and value by value.

Why a module of its own: a merge (:mod:`.merging`) copies a source's samples through the cache's
own batch writer (:func:`~.writes.store_batch`), so that the destination's sums are exactly those
of its rows, and compares a sample both caches hold value by value (:mod:`.merge_conflicts`).
Both need every stored value of a sample back (loss, token counts, texts, every statistic of every
matrix, spectra, the sample's own fields and cosines) in two shapes at once: the records the
writer takes, and a flat mapping from a name ("nuclear layer 3 q") to the value, which is what a
conflict reports. Reading them is a chunk of samples at a time (:data:`CHUNK_SAMPLES`), so a
merge's memory is that of one chunk whatever the size of the run. SQL only with parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from layerscope.analysis.base.records import (
    MATRIX_STATISTICS,
    MatrixStatistics,
    Sample,
    SampleResult,
)
from layerscope.analysis.cache.cosine_packing import UNPACKED_COSINES

__all__ = [
    "CHUNK_SAMPLES",
    "StoredSample",
    "chunks",
    "read_chunk",
    "skipped_samples",
    "stored_indices",
]

CHUNK_SAMPLES = 256  # samples read, compared and written at a time

_STAT_COLUMNS = ", ".join(f'"{name}"' for name in MATRIX_STATISTICS)
_STATISTICS_QUERY = (
    f"SELECT sample_index, layer, projection::VARCHAR, {_STAT_COLUMNS} FROM statistics "  # noqa: S608 (constant column list)
    "WHERE run_no = ? AND sample_index BETWEEN ? AND ? ORDER BY sample_index, layer, projection"
)


@dataclass
class StoredSample:
    """One stored sample: as the batch writer takes it, and its values for comparison."""

    result: SampleResult
    sample: Sample
    values: dict[str, Any]


def read_chunk(
    con: duckdb.DuckDBPyConnection, run_no: int, low: int, high: int
) -> dict[int, StoredSample]:
    """The run's stored samples with indices ``low..high`` (inclusive)."""
    params = [run_no, low, high]
    found: dict[int, StoredSample] = {}
    for index, loss, prompt, response, instruction, input_, output in con.execute(
        "SELECT sample_index, loss, prompt_tokens, response_tokens, instruction, input, output "
        "FROM samples WHERE run_no = ? AND sample_index BETWEEN ? AND ? ORDER BY sample_index",
        params,
    ).fetchall():
        result = SampleResult(
            int(index),
            math.nan if loss is None else float(loss),
            -1 if prompt is None else int(prompt),
            -1 if response is None else int(response),
            [],
        )
        sample = Sample(int(index), instruction or "", output or "", input_ or "", {})
        values: dict[str, Any] = {
            "loss": result.loss,
            "prompt tokens": result.prompt_tokens,
            "response tokens": result.response_tokens,
            "instruction": sample.instruction,
            "input": sample.input,
            "output": sample.output,
        }
        found[int(index)] = StoredSample(result, sample, values)
    matrices: dict[tuple[int, int, str], MatrixStatistics] = {}
    positions: dict[tuple[int, int, str], int] = {}  # where each is in its sample's list
    for row in con.execute(
        _STATISTICS_QUERY,
        params,
    ).fetchall():
        stored = found.get(int(row[0]))
        if stored is None:
            continue
        layer, projection = int(row[1]), str(row[2])
        stats = {
            name: float(value)
            for name, value in zip(MATRIX_STATISTICS, row[3:], strict=True)
            if value is not None
        }
        matrix = MatrixStatistics(layer, projection, stats)
        matrices[(stored.result.index, layer, projection)] = matrix
        positions[(stored.result.index, layer, projection)] = len(stored.result.matrices)
        stored.result.matrices.append(matrix)
        for name in MATRIX_STATISTICS:
            stored.values[f"{name} layer {layer} {projection}"] = stats.get(name)
    for index, layer, projection, spectrum in con.execute(
        "SELECT sample_index, layer, projection::VARCHAR, singular_values FROM spectra "
        "WHERE run_no = ? AND sample_index BETWEEN ? AND ? ORDER BY sample_index, layer, projection",
        params,
    ).fetchall():
        key = (int(index), int(layer), str(projection))
        spectrum_values = [None if v is None else float(v) for v in spectrum]
        if key in matrices:
            stored = found[key[0]]
            position = positions[key]
            stored.result.matrices[position] = MatrixStatistics(
                key[1], key[2], matrices[key].values, spectrum_values
            )
            stored.values[f"spectrum layer {layer} {projection}"] = spectrum_values
    for index, name, value in con.execute(
        "SELECT sample_index, name, value FROM sample_fields WHERE run_no = ? AND sample_index BETWEEN ? AND ? ORDER BY sample_index, name",
        params,
    ).fetchall():
        if int(index) in found:
            stored = found[int(index)]
            stored.sample = Sample(
                stored.sample.index,
                stored.sample.instruction,
                stored.sample.output,
                stored.sample.input,
                {**stored.sample.numeric_fields, str(name): float(value)},
            )
            stored.values[f"field {name}"] = float(value)
    for index, kind, name, layers, cosines in con.execute(
        f"SELECT sample_index, kind, name, layers, {UNPACKED_COSINES} FROM sample_cosines "  # noqa: S608 (the schema's constant SQL)
        "WHERE run_no = ? AND sample_index BETWEEN ? AND ? ORDER BY sample_index, kind, name",
        params,
    ).fetchall():
        if int(index) not in found:
            continue
        stored = found[int(index)]
        flat = [math.nan if v is None else float(v) for v in cosines]
        layer_list = [int(layer) for layer in layers]
        result = stored.result
        if kind == "layers":
            size = len(layer_list)
            result.layer_cosines[name] = [flat[i * size : (i + 1) * size] for i in range(size)]
        else:
            result.pair_cosines[name] = flat
        result.cosine_layers[name] = layer_list
        stored.values[f"cosines {kind} {name}"] = flat
    return found


def stored_indices(con: duckdb.DuckDBPyConnection, run_no: int) -> list[int]:
    """The indices of the run's stored samples, in order."""
    rows = con.execute(
        "SELECT sample_index FROM samples WHERE run_no = ? ORDER BY sample_index", [run_no]
    ).fetchall()
    return [int(r[0]) for r in rows]


def skipped_samples(con: duckdb.DuckDBPyConnection, run_no: int) -> dict[int, tuple[str, str]]:
    """The run's samples not measured: index to (kind, reason), kind ``skipped`` or ``failed``."""
    rows = con.execute(
        "SELECT sample_index, kind, reason FROM skipped WHERE run_no = ?", [run_no]
    ).fetchall()
    return {int(i): (str(kind), str(reason)) for i, kind, reason in rows}


def chunks(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first, last) index of successive chunks of :data:`CHUNK_SAMPLES` of ``indices``."""
    for start in range(0, len(indices), CHUNK_SAMPLES):
        part = indices[start : start + CHUNK_SAMPLES]
        yield part[0], part[-1]
