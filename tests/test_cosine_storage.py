"""Each sample's cosines as the cache stores them (schema version 6): a matrix's cells above its
diagonal once, beside them only what its diagonal and lower triangle do not repeat, and every
value read back bit for bit as written: from the engine, from an imported file and from a
version-4 file upgraded in place. And what that saves: a sample of a 30-layer model in at most
20 KB."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pytest
from cache_helpers import batch, make_result, make_samples, paper_matrices, run_id_for, targets

from layerscope.analysis.base.records import RunHeader, SampleResult
from layerscope.analysis.cache import ResultsCache, migrations
from layerscope.analysis.cache import schema as cache_schema
from layerscope.analysis.cache.health import examine
from layerscope.analysis.interchange.paper_export import write_paper_jsonl
from layerscope.analysis.interchange.paper_ingest import import_paper_jsonl

PROJECTIONS = ("q", "k", "v", "o")


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)


def bits(values) -> list[int]:
    """The float32 bit patterns of ``values`` (what REAL stores: NaN and -0.0 told apart)."""
    return np.asarray(values, dtype=np.float32).view(np.uint32).tolist()


def engine_matrix(rng: random.Random, size: int) -> list[list[float]]:
    """A cosine matrix as the engine writes it: symmetric, 1.0 on the diagonal, cells that are
    doubles (stored rounded to float32)."""
    matrix = [[1.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            matrix[i][j] = matrix[j][i] = rng.uniform(-1, 1)
    return matrix


def zero_gradient(matrix: list[list[float]], layer: int) -> list[list[float]]:
    """The same matrix with one layer's gradient zero: NaN in its row and column, diagonal too."""
    return [
        [math.nan if layer in (i, j) else v for j, v in enumerate(row)]
        for i, row in enumerate(matrix)
    ]


def begin(cache, name: str, layers: int, samples: int) -> str:
    run_id = run_id_for(name)
    cache.begin_run(
        RunHeader(run_id, "m", "d", "t", "base", samples, targets(layers), {}, {"layerscope": "t"})
    )
    return run_id


def result(
    index: int,
    layers: int,
    matrices: dict[str, list[list[float]]],
    pairs: dict[str, list[float]] | None = None,
) -> SampleResult:
    """A sample with these cosine matrices (and pair cosines), its statistics synthetic."""
    sample = make_result(index, layers, cosines=False)
    sample.layer_cosines = matrices
    sample.pair_cosines = pairs or {}
    return sample


def stored(cache, run_id: str) -> dict[tuple[int, str, str], tuple[list[int], list[float]]]:
    """Every sample's cosines as the export stream reads them: (index, kind, name) ->
    (layers, cosines: a matrix row-major)."""
    found = {}
    for sample, _matrices in cache.iter_sample_statistics(run_id):
        for kind, by_name in sample["cosines"].items():
            for name, value in by_name.items():
                found[(sample["index"], kind, name)] = value
    return found


def rows(path) -> list[tuple]:
    """The stored rows of ``sample_cosines``, floats as float32 bits (NULL as None)."""
    with duckdb.connect(str(path), read_only=True) as con:
        found = con.execute(
            "SELECT sample_index, kind, name, layers, cells, diagonal, lower FROM sample_cosines "
            "ORDER BY sample_index, kind, name"
        ).fetchall()
    return [
        (*row[:4], *(None if values is None else bits(values) for values in row[4:]))
        for row in found
    ]


def assert_read_back(cache, run_id: str, written: dict[int, SampleResult]) -> None:
    """Every matrix and pair of ``written`` reads back bit for bit, with its layers."""
    read = stored(cache, run_id)
    expected = {}
    for index, sample in written.items():
        for name, matrix in sample.layer_cosines.items():
            flat = [v for row in matrix for v in row]
            expected[(index, "layers", name)] = (list(range(len(matrix))), flat)
        for name, values in sample.pair_cosines.items():
            expected[(index, "pair", name)] = (list(range(len(values))), values)
    assert set(read) == set(expected)
    for key, (layers, values) in expected.items():
        assert read[key][0] == layers, key
        assert bits(read[key][1]) == bits(values), key


# ---- the layout -------------------------------------------------------------------------------


def test_engine_matrices_keep_their_upper_triangle_only_and_read_back_bit_for_bit(cache):
    rng = random.Random(1)
    layers = 6
    written = {
        index: result(
            index,
            layers,
            {p: engine_matrix(rng, layers) for p in PROJECTIONS},
            {"q-o": [rng.uniform(-1, 1) for _ in range(layers)], "k-v": [math.nan] * layers},
        )
        for index in range(3)
    }
    written[2].layer_cosines["v"] = zero_gradient(written[2].layer_cosines["v"], 4)
    run_id = begin(cache, "engine", layers, 3)
    cache.write_batch(run_id, batch(list(written.values())), make_samples(3))
    assert_read_back(cache, run_id, written)
    for index, kind, name, _layers, cells, diagonal, lower in rows(cache.path):
        if kind == "pair":
            assert len(cells) == layers and diagonal is None and lower is None
            continue
        assert len(cells) == layers * (layers - 1) // 2  # above the diagonal only
        assert lower is None  # symmetric bit for bit: the mirror is not stored
        if (index, name) == (2, "v"):
            assert diagonal == bits([1, 1, 1, 1, math.nan, 1])  # the zero gradient's NaN
        else:
            assert diagonal is None  # all ones
    # The adjacent-layer cosine is read from the stored cells: matrix[i][i + 1] at layer i.
    values = cache.sample_values(run_id, "adjacent_cosine", ["q"])["q"]
    for index, sample in written.items():
        matrix = sample.layer_cosines["q"]
        expected = [matrix[i][i + 1] for i in range(layers - 1)]
        assert bits(values[index][:-1]) == bits(expected)
        assert math.isnan(values[index][-1])  # the last layer has no next one


@pytest.mark.parametrize("size", [1, 2, 5])
def test_matrices_that_are_not_their_own_transpose_read_back_bit_for_bit(cache, size):
    """What an imported file (or a BLAS that adds (i, j) and (j, i) in other orders) may hold:
    cells unlike their mirror, by a float32 step, by the sign of zero, by NaN on one side only,
    and a diagonal that is not all ones."""
    rng = random.Random(size)
    full = [[rng.uniform(-1, 1) for _ in range(size)] for _ in range(size)]
    one_step = engine_matrix(rng, size)
    signed_zero = engine_matrix(rng, size)
    one_sided_nan = engine_matrix(rng, size)
    if size > 1:
        above = np.float32(one_step[0][1])
        one_step[1][0] = float(np.nextafter(above, np.float32(2)))
        signed_zero[0][1], signed_zero[1][0] = 0.0, -0.0
        one_sided_nan[1][0] = math.nan
    written = {
        0: result(0, size, {"q": full, "k": one_step, "v": signed_zero, "o": one_sided_nan}),
        1: result(1, size, {"q": [[0.5] * size for _ in range(size)]}),  # diagonal not ones
    }
    run_id = begin(cache, f"asymmetric {size}", size, 2)
    cache.write_batch(run_id, batch(list(written.values())), make_samples(2))
    assert_read_back(cache, run_id, written)
    kept = {(row[0], row[2]): (row[5], row[6]) for row in rows(cache.path)}  # diagonal, lower
    assert kept[(0, "q")][0] is not None  # a random diagonal is kept
    assert kept[(1, "q")][0] == bits([0.5] * size) and kept[(1, "q")][1] is None
    for name in ("q", "k", "v", "o") if size > 1 else ():
        assert kept[(0, name)][1] is not None, name  # each differs from its mirror somewhere


def test_an_imported_file_exports_its_asymmetric_matrices_as_they_were(cache, tmp_path):
    """The follow-up paper's ``cosine_sim`` as a file has it, not symmetric, null where
    undefined: the export gives every cell back, float32-rounded as stored, nothing mirrored."""
    rng = np.random.default_rng(3)
    layers = 3
    lines = []
    for index in range(2):
        matrix = rng.uniform(-1, 1, (layers, layers)).tolist()
        matrix[2][0] = None
        matrix[0][1], matrix[1][0] = 0.0, -0.0
        line = {"instruction": f"Q{index}?", "output": "A.", "loss": 1.0 + index}
        line.update(paper_matrices(layers, 0.5))
        line["cosine_sim"] = {
            f"{p}_proj": {"layer_indices": list(range(layers)), "matrix": matrix} for p in "qk"
        }
        lines.append(line)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    info = import_paper_jsonl(cache, source, model="m", dataset="d", response_type="t").info
    out = tmp_path / "out.jsonl"
    write_paper_jsonl(cache, info.id, out)
    for line, exported in zip(lines, map(json.loads, out.read_text().splitlines()), strict=True):
        for p in ("q_proj", "k_proj"):
            original = line["cosine_sim"][p]["matrix"]
            back = exported["cosine_sim"][p]["matrix"]
            assert [v is None for row in back for v in row] == [
                v is None for row in original for v in row
            ]
            assert bits([v for row in back for v in row if v is not None]) == bits(
                [v for row in original for v in row if v is not None]
            )


# ---- the upgrade from version 4 ---------------------------------------------------------------


def mixed_run(cache, layers: int = 5) -> tuple[str, dict[int, SampleResult]]:
    """A run whose samples hold engine matrices, a zero gradient, a random matrix and one whose
    mirror cells differ by the sign of zero."""
    rng = random.Random(4)
    written = {}
    for index in range(6):
        matrices = {p: engine_matrix(rng, layers) for p in PROJECTIONS}
        if index == 1:
            matrices["k"] = zero_gradient(matrices["k"], 0)
        if index == 2:
            matrices["o"] = [[rng.uniform(-1, 1) for _ in range(layers)] for _ in range(layers)]
        if index == 3:
            matrices["v"][0][1], matrices["v"][1][0] = 0.0, -0.0
        pairs = {"q-o": [rng.uniform(-1, 1) for _ in range(layers)]}
        written[index] = result(index, layers, matrices, pairs)
    run_id = begin(cache, "mixed", layers, len(written))
    samples = make_samples(len(written))
    for first in (0, 3):
        cache.write_batch(run_id, batch([written[i] for i in range(first, first + 3)]), samples)
    cache.finish_run(run_id, "complete")
    return run_id, written


def as_version_4(path, written: dict[int, SampleResult]) -> None:
    """Put the file back to version 4: its ``sample_cosines`` table as that version created it,
    holding the matrices row-major as that version's writer stored them (from ``written``, not
    from the version-6 rows; without version 5's kept tests)."""
    stored_rows = [
        (index, "layers", name, list(range(len(m))), [v for row in m for v in row])
        for index, sample in written.items()
        for name, m in sample.layer_cosines.items()
    ] + [
        (index, "pair", name, list(range(len(values))), values)
        for index, sample in written.items()
        for name, values in sample.pair_cosines.items()
    ]
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE sample_cosines")
        con.execute("DROP TABLE kept_tests")
        for statement in migrations.MIGRATIONS[4]:
            con.execute(statement)
        con.execute(
            "INSERT INTO sample_cosines SELECT 1, unnest(?::INTEGER[]), unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::SMALLINT[][]), unnest(?::REAL[][])",
            [list(column) for column in zip(*stored_rows, strict=True)],
        )
        con.execute("UPDATE layerscope_meta SET value = '4' WHERE key = 'schema_version'")


def reads(cache, run_id: str) -> dict[str, object]:
    """What the readers above the storage layer get of a run's cosines, floats as bits."""
    return {
        "samples": {key: (layers, bits(v)) for key, (layers, v) in stored(cache, run_id).items()},
        "adjacent": {
            p: {i: bits(v) for i, v in by_sample.items()}
            for p, by_sample in cache.sample_values(run_id, "adjacent_cosine").items()
        },
        "curves": [
            (c.projection, bits(c.mean), c.count) for c in cache.curves([run_id], "adjacent_cosine")
        ],
        "means": {p: bits(np.ravel(cache.layer_cosines(run_id, p))) for p in PROJECTIONS},
    }


def test_a_version_4_file_is_upgraded_in_place_on_a_read_and_reads_the_same(cache, tmp_path):
    run_id, written = mixed_run(cache)
    before = reads(cache, run_id)
    rows_written = rows(cache.path)
    export_before = tmp_path / "before.jsonl"
    write_paper_jsonl(cache, run_id, export_before)
    as_version_4(cache.path, written)

    # What the doctor says of it, before anything upgrades it.
    report = examine(cache.path)
    assert any(
        f.check == "schema" and "version 4, older than 6" in f.message for f in report.findings
    )
    with duckdb.connect(str(cache.path)) as con:
        assert migrations.tables_version(cache_schema.table_columns(con)) == 4

    reader = ResultsCache(cache.path, lock_timeout=5)
    assert [info.id for info in reader.runs()] == [run_id]  # a read upgrades it
    with duckdb.connect(str(cache.path), read_only=True) as con:
        assert cache_schema.schema_version(con) == 6
        assert migrations.tables_version(cache_schema.table_columns(con)) == 6
        assert "unpacked_sample_cosines" not in cache_schema.table_names(con)
    assert rows(cache.path) == rows_written  # exactly what the writer stores
    assert reads(reader, run_id) == before
    assert_read_back(reader, run_id, written)
    export_after = tmp_path / "after.jsonl"
    write_paper_jsonl(reader, run_id, export_after)
    assert export_after.read_text() == export_before.read_text()


def test_a_version_4_file_with_an_unreadable_version_is_matched_to_version_4(cache):
    """The doctor names the version whose tables (and columns) the file has: version 6 has the
    same cosine table as 4, not the same columns."""
    _run_id, written = mixed_run(cache)
    as_version_4(cache.path, written)
    with duckdb.connect(str(cache.path)) as con:
        con.execute("UPDATE layerscope_meta SET value = 'four' WHERE key = 'schema_version'")
    [problem] = [f.message for f in examine(cache.path).findings if f.severity == "problem"]
    assert "tables are those of schema version 4" in problem
    assert "SET value = '4'" in problem


def test_the_upgrade_waits_for_a_reader_holding_the_file(cache, tmp_path):
    """Another process reading a version-4 file: the upgrade (which needs the file read-write)
    waits for it, as every write does, then reads as usual."""
    run_id, written = mixed_run(cache)
    as_version_4(cache.path, written)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, time
                con = duckdb.connect({str(cache.path)!r}, read_only=True)
                print("reading", flush=True)
                time.sleep(1.0)
                con.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "reading"
        started = time.monotonic()
        reader = ResultsCache(cache.path, lock_timeout=20)
        assert [info.id for info in reader.runs()] == [run_id]
        assert time.monotonic() - started > 0.3  # it waited for the other reader
    finally:
        holder.kill()
        holder.wait()
    assert_read_back(reader, run_id, written)


# ---- what it saves ----------------------------------------------------------------------------


def test_a_sample_of_a_30_layer_model_takes_at_most_20_kb(cache):
    """500 samples of a 30-layer model with engine-like cosines (random cells, as incompressible
    as real ones) and statistics, written in 20 transactions: the file holds at most 20 KB per
    sample (17.3 KB; version 4's row-major matrices made it 23.0 KB), the cosine rows at most 8 KB
    of it (7.5 KB, their values alone 4 x 435 + 2 x 30 float32 = 7.2 KB; version 4: 14.9 KB)."""
    rng = random.Random(0)
    layers, count = 30, 500
    run_id = begin(cache, "size", layers, count)
    samples = make_samples(count)
    for start in range(0, count, 25):
        results = []
        for index in range(start, start + 25):
            sample = result(
                index,
                layers,
                {p: engine_matrix(rng, layers) for p in PROJECTIONS},
                {pair: [rng.uniform(-1, 1) for _ in range(layers)] for pair in ("q-o", "k-v")},
            )
            for matrix in sample.matrices:
                matrix.values = {k: v * rng.uniform(0.5, 1.5) for k, v in matrix.values.items()}
            results.append(sample)
        cache.write_batch(run_id, batch(results), samples)
    cache.finish_run(run_id, "complete")
    per_sample = cache.path.stat().st_size / count
    with duckdb.connect(str(cache.path), read_only=True) as con:
        [(blocks, block_size)] = con.execute(
            "SELECT count(DISTINCT block_id), any_value(d.block_size) "
            "FROM pragma_storage_info('sample_cosines'), pragma_database_size() d "
            "WHERE persistent"
        ).fetchall()
    cosines_per_sample = blocks * block_size / count
    assert per_sample <= 20_000, f"{per_sample / 1000:.1f} KB per sample"
    assert cosines_per_sample <= 8_000, f"cosine rows: {cosines_per_sample / 1000:.1f} KB"
