"""Getting runs' rows out of the cache: tables (Parquet, CSV) and the per-sample stream that
the paper-format export writes.

Why every row of a table names its run (id, model, dataset, response type, mode): several runs
export as one tidy table that pandas, R or DuckDB group by those columns directly, and a file
of one run still says where its numbers came from once it is copied away from the cache.

Why apart from the reads: exports touch every row of a run, so they must not keep a writer
waiting. The table is copied in one short read into a private temporary folder and then written
to the user's destination through :func:`layerscope.analysis.base.outputs.open_output`, which refuses
the cache's own files (:func:`cache_files`) and an existing file unless asked, and publishes a
file only when it is complete; the stream reads in chunks of :data:`SCAN_CHUNK` samples, one
short connection each. No user-supplied text is ever spliced into SQL: the query takes the run
numbers as a list parameter and DuckDB's relation API takes the file name as an argument.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from layerscope.analysis.base.errors import QueryError
from layerscope.analysis.base.outputs import check_destination, is_stdout, open_output
from layerscope.analysis.base.records import MATRIX_STATISTICS
from layerscope.analysis.cache.connection import CacheFile
from layerscope.analysis.cache.cosine_packing import UNPACKED_COSINES
from layerscope.analysis.cache.reads import as_count, as_float
from layerscope.analysis.cache.runs import resolve

__all__ = [
    "RUN_COLUMNS",
    "SCAN_CHUNK",
    "TABLE_FORMATS",
    "SampleCosines",
    "cache_files",
    "export_table",
    "iter_sample_statistics",
]

# Samples per read connection in long scans (exports), so a writer is never kept waiting long.
SCAN_CHUNK = 2000
TABLE_FORMATS = ("parquet", "csv")

_STAT_COLUMNS = ", ".join(f't."{s}"' for s in MATRIX_STATISTICS)
# The columns that name a row's run, first in every exported table.
RUN_COLUMNS = ("run_id", "model", "dataset", "response_type", "mode")
_TABLE_QUERY = f"""
    SELECT r.id AS run_id, r.model, r.dataset, r.response_type, r.mode,
           t.sample_index, s.loss, s.prompt_tokens, s.response_tokens,
           t.layer, t.projection::VARCHAR AS projection, g.parameter,
           {_STAT_COLUMNS}
    FROM statistics t
    JOIN runs r ON r.run_no = t.run_no
    JOIN samples s ON s.run_no = t.run_no AND s.sample_index = t.sample_index
    LEFT JOIN targets g ON g.run_no = t.run_no AND g.layer = t.layer
                       AND g.projection = t.projection
    WHERE list_contains($runs, t.run_no)
    ORDER BY list_position($runs, t.run_no), t.sample_index, t.layer, t.projection
"""  # noqa: S608 (identifiers from MATRIX_STATISTICS, the run numbers a parameter)
_COUNT_QUERY = "SELECT count(*) FROM statistics WHERE list_contains($runs, run_no)"
_SAMPLES_QUERY = (
    "SELECT sample_index, loss, prompt_tokens, response_tokens, instruction, input, output "
    "FROM samples WHERE run_no = ? AND sample_index > ? ORDER BY sample_index LIMIT ?"
)
_MATRICES_QUERY = f"""
    SELECT t.sample_index, t.layer, t.projection::VARCHAR, {_STAT_COLUMNS},
           sp.singular_values
    FROM statistics t LEFT JOIN spectra sp
      ON sp.run_no = t.run_no AND sp.sample_index = t.sample_index
     AND sp.layer = t.layer AND sp.projection = t.projection
    WHERE t.run_no = $run AND t.sample_index BETWEEN $first AND $last
    ORDER BY t.sample_index, t.layer, t.projection
"""  # noqa: S608 (identifiers from MATRIX_STATISTICS, values are parameters)

_COSINES_QUERY = f"""
    SELECT sample_index, kind, name, layers, {UNPACKED_COSINES} FROM sample_cosines
    WHERE run_no = $run AND sample_index BETWEEN $first AND $last
    ORDER BY sample_index, kind, name
"""  # noqa: S608 (the schema's constant SQL, values are parameters)

Matrices = list[tuple[int, str, dict[str, float], list[float] | None]]
# kind ("layers" or "pair") -> name (projection or "q-o"/"k-v") -> (layers, cosines row-major)
SampleCosines = dict[str, dict[str, tuple[list[int], list[float]]]]


def cache_files(path: Path) -> dict[Path, str]:
    """The files of a cache that an export must never write over, with what each is: the
    database and DuckDB's write-ahead log beside it."""
    return {
        path: "the results cache",
        path.with_name(f"{path.name}.wal"): "the results cache's write-ahead log",
    }


def export_table(
    file: CacheFile,
    run_ids: str | Sequence[str],
    path: Path | str,
    file_format: str,
    *,
    force: bool = False,
) -> int:
    """Write the runs' statistics as one table, one row per run, sample and matrix, as Parquet
    or CSV; returns the number of rows written (see ``ResultsCache.export_table``). The runs
    come in the order given, a run given twice once."""
    if file_format not in TABLE_FORMATS:
        raise QueryError(f"unknown table format {file_format!r}: parquet or csv")
    if file_format == "parquet" and is_stdout(path):
        raise QueryError("Parquet is a binary file format: give a file name, not standard output")
    wanted = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    if not wanted:
        raise QueryError("no run to export")
    protected = cache_files(file.path)
    check_destination(path, protected, force=force)  # refused before any work
    scratch = Path(tempfile.mkdtemp(prefix="layerscope-export-"))
    temporary = scratch / f"export.{file_format}"
    try:
        with file.reading() as con:  # one snapshot: every run as it stood at the same moment
            numbers: list[int] = []
            for run_id in wanted:
                run_no, _info = resolve(con, file.path, run_id)
                if run_no not in numbers:
                    numbers.append(run_no)
            assert con is not None
            relation = con.sql(_TABLE_QUERY, params={"runs": numbers})
            if file_format == "parquet":
                relation.write_parquet(str(temporary))
            else:
                relation.write_csv(str(temporary), header=True)
            count = con.execute(_COUNT_QUERY, {"runs": numbers}).fetchone()
        with open_output(path, protected, force=force) as handle, open(temporary, "rb") as table:
            shutil.copyfileobj(table, handle, 1 << 20)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return int(count[0]) if count else 0


def iter_sample_statistics(
    file: CacheFile, run_id: str
) -> Iterator[tuple[dict[str, Any], Matrices]]:
    """Every stored sample in index order with its matrices (see
    ``ResultsCache.iter_sample_statistics``), in chunks of SCAN_CHUNK samples."""
    after = -1
    while True:
        with file.reading() as con:
            run_no, _info = resolve(con, file.path, run_id)
            assert con is not None
            samples = con.execute(_SAMPLES_QUERY, [run_no, after, SCAN_CHUNK]).fetchall()
            if not samples:
                return
            first, last = samples[0][0], samples[-1][0]
            rows = con.execute(
                _MATRICES_QUERY, {"run": run_no, "first": first, "last": last}
            ).fetchall()
            cosine_rows = con.execute(
                _COSINES_QUERY, {"run": run_no, "first": first, "last": last}
            ).fetchall()
        cosines: dict[int, SampleCosines] = {}
        for index, kind, name, layers, values in cosine_rows:
            cosines.setdefault(int(index), {}).setdefault(kind, {})[name] = (
                [int(layer) for layer in layers],
                [as_float(v) for v in values],
            )
        by_sample: dict[int, Matrices] = {}
        for row in rows:
            values = dict(zip(MATRIX_STATISTICS, row[3:-1], strict=True))
            stats = {k: float(v) for k, v in values.items() if v is not None}
            spectrum = [as_float(v) for v in row[-1]] if row[-1] is not None else None
            by_sample.setdefault(int(row[0]), []).append((int(row[1]), row[2], stats, spectrum))
        for index, loss, prompt, response, instruction, input_text, output in samples:
            sample = {
                "index": int(index),
                "loss": as_float(loss),
                "prompt_tokens": as_count(prompt),
                "response_tokens": as_count(response),
                "instruction": instruction or "",
                "input": input_text or "",
                "output": output or "",
                "cosines": cosines.get(int(index), {}),
            }
            yield sample, by_sample.get(int(index), [])
        after = samples[-1][0]
