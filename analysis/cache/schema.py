"""The results cache's schema: its tables, its versions and the migrations between them.

Why a module of its own: the schema is the cache's contract with every file already on a
user's disk, so its tables, the SQL that creates them and the steps between versions are kept
together and apart from the code that reads and writes rows. Nothing here opens a file; it talks
SQL on a connection it is given (:mod:`.connection` decides when).

Why a versioned schema: cache files outlive layerscope versions (users keep months of GPU time
in them), so a file records its schema version, an older file is upgraded in place and a newer
one is refused instead of misread. Version :data:`SCHEMA_VERSION`, stored in ``layerscope_meta``.

``layerscope_meta(key PRIMARY KEY, value)``: ``schema_version``.

``runs``: one row per run. ``run_no`` INTEGER PRIMARY KEY (a 4-byte surrogate used by the large
tables instead of the 64-character id), ``id`` VARCHAR UNIQUE (the content hash that is the run's
key), ``model``, ``dataset``, ``response_type``, ``mode``, ``status`` (running, complete,
cancelled, failed), ``samples_total`` (samples in the data file), ``layers``, ``projections``
VARCHAR[], ``settings`` and ``provenance`` (JSON text), ``started_at``/``finished_at`` (UTC),
``owner_pid``/``owner_host`` (the process computing it, to tell a live run from a killed one).

``samples(run_no, sample_index, loss DOUBLE, prompt_tokens, response_tokens, instruction, input,
output)``, primary key (run_no, sample_index): one row per measured sample.

``statistics(run_no, sample_index, layer SMALLINT, projection ENUM, <one REAL column per name in
MATRIX_STATISTICS>)``: long format, one row per sample and gradient matrix, one column per
statistic, so every aggregate is a GROUP BY. REAL (float32) keeps 7 significant digits, more than
the gradients themselves carry, and halves the file: a 500-sample run of a 32-layer model is
64,000 rows, about 3 MB. No index: rows of one run are appended together, so DuckDB's per-row-group
min/max (zone maps) on ``run_no`` prune the scan.

``skipped(run_no, sample_index, kind, reason)``, primary key (run_no, sample_index): samples not
measured. ``kind`` is ``skipped`` (the engine refused the sample, e.g. no response token left
after truncation; not retried) or ``failed`` (computing it raised; retried on resume).

``targets(run_no, layer, projection, parameter, rows, cols)``: the measured matrices and the
model's own parameter names (the paper-format export keys its objects by them); rows/cols are 0
when unknown (imported runs).

Version 2 added what makes reading fast and the optional extras:
``curve_sums(run_no, projection, layer, statistic, samples, total, squares, nonfinite_samples)``,
primary key (run_no, projection, layer, statistic): per run, the count, sum and sum of squares of
every statistic by layer, over the samples whose statistic is finite at every layer of that
projection (``nonfinite_samples`` counts the others). ``write_batch`` updates it in the batch's
transaction, so ``show`` and the TUI get mean, std and CI of any run in O(layers) instead of
scanning its rows: 32 million rows would take a second or more to scan, the sums milliseconds
(benchmarks/bench_curves.py). Length control needs a per-sample filter, so it scans the rows with
GROUP BY (same numbers: the sums add the values rounded to float32 exactly as stored).
``spectra(run_no, sample_index, layer, projection, singular_values REAL[])`` (only with
``--spectra``) and ``cosine_sums(run_no, kind, name, size, totals DOUBLE[], counts INTEGER[])``:
running sums over samples of the gradient cosines, kind ``layers`` (name = projection, the L x L
layer-by-layer matrix, row-major) or ``pair`` (name ``q-o``/``k-v``, one value per layer), with
per-cell counts of finite values. Their mean over samples then costs O(L^2) per run instead of
O(samples x L^2) rows; the price is that cosines are not length-controlled.

Version 3 added ``sample_fields(run_no, sample_index, name, value DOUBLE)``, primary key
(run_no, sample_index, name): a sample's own numeric fields from its data file (quality scores
such as ``ifd_gpt2`` or ``reward``), so per-sample gradient statistics can be related to them
without the file. A table of its own, long format, because every dataset has other fields; a
file upgraded from version 2 has it empty (its runs were stored without fields: ``layerscope
select`` and the correlations read them from the data file when it is unchanged).

Version 4 added each sample's own cosines, which the follow-up paper's files carry per line and
its analyses (the adjacent-layer cosine with its spread, data subsets) need per sample:
``sample_cosines(run_no, sample_index, kind, name, layers SMALLINT[], cosines REAL[])``, kind
``layers`` (name = projection, ``cosines`` the len(layers)^2 matrix row-major, between the layers
listed) or ``pair`` (name ``q-o``/``k-v``, one cosine per listed layer); NaN where a cosine is
undefined (a zero gradient). ``--no-cosines`` keeps neither. Runs stored before version 4 have
only their ``cosine_sums``: their means read as before, their per-sample cosines are absent
(exports leave the keys out).

Version 5 keeps the tests of significance of the pairs compared (:mod:`.kept_tests`), so that a
pair is tested once: ``kept_tests(run_a, run_b, settings, state, tests)``, one row per pair and
settings digest, ``state`` the digest of what the tests were computed from.

Version 6 stores each matrix's cells once: ``sample_cosines(run_no, sample_index, kind, name,
layers SMALLINT[], cells REAL[], diagonal REAL[], lower REAL[])``. A pair's ``cells`` are its
cosines, one per listed layer. A matrix of n layers keeps in ``cells`` the n(n-1)/2 cells above
its diagonal, row by row (``[0][1..n-1]``, ``[1][2..n-1]``, ...); ``diagonal`` is NULL when every
diagonal cell is 1.0, else the n diagonal cells; ``lower`` is NULL when every cell below the
diagonal equals its mirror above, else the cells below in the order of their mirrors (``lower[k]``
is ``[j][i]`` where ``cells[k]`` is ``[i][j]``). Why: a cosine matrix is symmetric with a unit
diagonal, so half of each row-major matrix repeated the other half, and these rows were two
thirds of the bytes a run uses: for the 4 attention projections of a 30-layer model, 15 KB of the
22 KB a sample used (benchmarks/bench_cache.py's write side, random cells as incompressible as
real ones). Stored once they take 7.5 KB, the floor for float32 values (4 x 435 + 2 x 30 of them).

Why lossless instead of symmetric by definition: a matrix reads back bit for bit as written, and
what is written is not always symmetric bit for bit. The engine's formed and batch-end routes take
the Gram from a BLAS product that may add (i, j) and (j, i) in different orders (MKL on a CPU left
about half the mirror cells a float32 step apart at 5 to 7 layers, none at 2 to 4 or 8 to 80; the
factor route fills both halves from one product), an imported file holds whatever its writer
wrote, and a zero gradient puts NaN on its diagonal. Such a matrix keeps ``lower`` or
``diagonal`` (with both, the n^2 values version 4 kept, no more); the engine's usual matrix,
symmetric with its diagonal exactly 1.0 once rounded to float32 (x / (sqrt(x) sqrt(x)) is within
2^-52 of 1), costs two NULLs. "Equal" is bit equality: 0.0 and -0.0 differ, and NaN equals NaN
(every undefined cosine is stored as the one NaN the writer makes of it). The diagonal is kept
apart from ``cells`` because it is almost always all ones: inside them it would cost n values per
matrix, 6% more at 30 layers. Lists in one row per matrix rather than a row per cell: a row per
cell would repeat the run, sample, kind, name and two layer numbers beside every 4-byte value.

The packing and unpacking are SQL in this module (:func:`packed_cosines_query`,
:data:`UNPACKED_COSINES`, :func:`cosine_cell`), used by the writer, by the upgrade to version 6
and by every reader, so an upgraded file holds exactly the rows the writer would have written, and
readers rebuild the row-major matrix in their query (the adjacent-layer cosine reads its one cell
where it is stored): nothing above the storage layer sees the layout. The upgrade rewrites every cosine row in its one transaction (about 1.2 s per 5,000
samples of a 32-layer model on a loaded 2-core machine), so other processes wait for the file as
for any write, up to their lock timeout. The file does not shrink: the packed rows are written
before the old ones are dropped, and DuckDB reuses the freed blocks for later writes. A process
that opened the file before the upgrade with an older layerscope names ``cosines``, which no
longer exists: its next cosine read or write fails instead of misreading the cells.

Migrations: :data:`MIGRATIONS` lists, per version, the statements that bring a file from the
previous version to it; a new file runs them all, an older file is upgraded in place (one
transaction per step), a file from a newer layerscope is refused with :class:`SchemaVersionError`.
A stored version layerscope never writes (``'two'``, ``'-1'``, or ``'0'`` in a file with tables:
an empty file has no record at all) is :class:`SchemaVersionUnreadable`, never guessed at:
reading such a file as empty said "no runs" of a file full of them, and upgrading it from 0 would
fail half-way. ``layerscope doctor`` (:mod:`.health`) says which version its tables (and their
columns) match.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Collection, Mapping

import duckdb

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import MATRIX_STATISTICS, PROJECTIONS

SCHEMA_VERSION = 6

# What the column types can hold, for code that checks values before it writes them (the
# paper-format import refuses or empties a value here instead of letting DuckDB fail mid-run).
INTEGER_MAX = 2**31 - 1  # INTEGER: sample_index, token counts, samples_total
SMALLINT_MAX = 2**15 - 1  # SMALLINT: layer
# REAL (float32): a double of this magnitude or more rounds to infinity, which DuckDB refuses
# ("out of range for ... FLOAT"); anything smaller rounds to a finite float32 (or to zero).
REAL_LIMIT = 2.0**128 - 2.0**103
# A statement, or a statement with its parameters.
Statement = str | tuple[str, list[object]]

_STAT_COLUMNS = ", ".join(f'"{name}" REAL' for name in MATRIX_STATISTICS)
# DDL takes no parameters: the labels are this package's constant projection names.
_PROJECTION_ENUM = ", ".join(f"'{p}'" for p in PROJECTIONS)


def curve_sums_query(statistic: str) -> tuple[str, list[object]]:
    """SQL (and its parameter) that recomputes ``curve_sums`` of one statistic for every run
    from its rows, with the table's column names. ``statistic`` is one of MATRIX_STATISTICS (it
    names a column). The rebuild stores it; ``layerscope doctor`` compares it with the store."""
    if statistic not in MATRIX_STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}")
    column = f't."{statistic}"'
    sql = f"""
        WITH bad AS (
            SELECT DISTINCT run_no, projection, sample_index FROM statistics t
            WHERE NOT isfinite({column})
        ),
        bad_count AS (SELECT run_no, projection, count(*) AS n FROM bad GROUP BY ALL)
        SELECT t.run_no AS run_no, t.projection::VARCHAR AS projection, t.layer AS layer,
               ?::VARCHAR AS statistic,
               count({column}) FILTER (WHERE b.sample_index IS NULL) AS samples,
               coalesce(sum({column}::DOUBLE) FILTER (WHERE b.sample_index IS NULL), 0) AS total,
               coalesce(sum({column}::DOUBLE * {column}) FILTER (WHERE b.sample_index IS NULL), 0)
                   AS squares,
               coalesce(any_value(c.n), 0) AS nonfinite_samples
        FROM statistics t
        LEFT JOIN bad b USING (run_no, projection, sample_index)
        LEFT JOIN bad_count c USING (run_no, projection)
        GROUP BY ALL
    """  # noqa: S608 (column name from MATRIX_STATISTICS, checked above; values are parameters)
    return sql, [statistic]


def _rebuild_curve_sums(statistic: str) -> tuple[str, list[object]]:
    """SQL (and its parameter) that (re)computes ``curve_sums`` of one statistic for every run
    from its rows."""
    sql, parameters = curve_sums_query(statistic)
    return f"INSERT OR REPLACE INTO curve_sums {sql}", parameters


def cosine_cell(row: str, column: str, size: str) -> str:
    """SQL for the (1-based) position in ``cells`` of a matrix's cell [row][column] above the
    diagonal (0-based, row < column) in a matrix of ``size`` layers: each an SQL expression."""
    return f"(({row}) * (2 * ({size}) - ({row}) - 1) // 2 + ({column}) - ({row}))"


# SQL: the number of layers n of a row's matrix, and its cell [i][j] in ``cosines`` (row-major;
# lists are 1-based).
_SIZE = "len(layers)"
_ROW_MAJOR = f"cosines[i * {_SIZE} + j + 1]"


def packed_cosines_query(source: str) -> str:
    """SELECT that stores the rows of ``source`` as ``sample_cosines`` holds them (see the
    module docs): ``source`` is a query giving ``run_no, sample_index, kind, name, layers`` and
    ``cosines``, a pair's cosines or a matrix row-major."""
    # Bit equality: = alone takes -0.0 for 0.0 (and NaN for NaN, which is meant).
    mirrored = "v = cells[k] AND signbit(v) = signbit(cells[k])"
    return f"""
        SELECT run_no, sample_index, kind, name, layers, cells,
               CASE WHEN NOT list_bool_and(list_transform(diagonal,
                                                          lambda d: d = 1 AND NOT signbit(d)))
                    THEN diagonal END AS diagonal,
               CASE WHEN NOT list_bool_and(list_transform(lower, lambda v, k: {mirrored}))
                    THEN lower END AS lower
        FROM (
            SELECT run_no, sample_index, kind, name, layers,
                   CASE WHEN kind = 'layers'
                        THEN flatten(list_transform(range({_SIZE}), lambda i:
                            list_transform(range(i + 1, {_SIZE}), lambda j: {_ROW_MAJOR})))
                        ELSE cosines END AS cells,
                   CASE WHEN kind = 'layers'
                        THEN list_transform(range({_SIZE}), lambda i:
                            cosines[i * {_SIZE} + i + 1]) END AS diagonal,
                   CASE WHEN kind = 'layers'
                        THEN flatten(list_transform(range({_SIZE}), lambda j:
                            list_transform(range(j + 1, {_SIZE}), lambda i: {_ROW_MAJOR})))
                        END AS lower
            FROM ({source})
        )
    """  # noqa: S608 (source is this package's constant SQL)


# SQL for a ``sample_cosines`` row's cosines as version 4 stored them: a pair's per layer, a
# matrix's row-major, rebuilt from ``cells``, ``diagonal`` and ``lower`` bit for bit.
UNPACKED_COSINES = f"""
    CASE WHEN kind = 'layers'
         THEN flatten(list_transform(range({_SIZE}), lambda i:
                  list_transform(range({_SIZE}), lambda j: CASE
                      WHEN i < j THEN cells[{cosine_cell("i", "j", _SIZE)}]
                      WHEN i = j THEN CASE WHEN diagonal IS NULL THEN 1::REAL
                                           ELSE diagonal[i + 1] END
                      WHEN lower IS NULL THEN cells[{cosine_cell("j", "i", _SIZE)}]
                      ELSE lower[{cosine_cell("j", "i", _SIZE)}] END)))
         ELSE cells END
"""


def _execute(con: duckdb.DuckDBPyConnection, statement: Statement) -> None:
    if isinstance(statement, str):
        con.execute(statement)
    else:
        con.execute(*statement)


def rebuild_curve_sums(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every run's ``curve_sums`` from its statistics rows.

    Used when upgrading a file that has statistics but no sums, and after bulk loads that
    bypass ``write_batch`` (the benchmark).
    """
    con.execute("DELETE FROM curve_sums")
    for name in MATRIX_STATISTICS:
        _execute(con, _rebuild_curve_sums(name))


MIGRATIONS: dict[int, tuple[Statement, ...]] = {
    1: (
        "CREATE TABLE layerscope_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        f"CREATE TYPE projection_name AS ENUM ({_PROJECTION_ENUM})",
        """CREATE TABLE runs (
            run_no INTEGER PRIMARY KEY,
            id VARCHAR NOT NULL UNIQUE,
            model VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            response_type VARCHAR NOT NULL,
            mode VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            samples_total INTEGER NOT NULL,
            layers INTEGER NOT NULL,
            projections VARCHAR[] NOT NULL,
            settings VARCHAR NOT NULL,
            provenance VARCHAR NOT NULL,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            owner_pid INTEGER,
            owner_host VARCHAR
        )""",
        """CREATE TABLE samples (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            loss DOUBLE,
            prompt_tokens INTEGER,
            response_tokens INTEGER,
            instruction VARCHAR,
            input VARCHAR,
            output VARCHAR,
            PRIMARY KEY (run_no, sample_index)
        )""",
        f"""CREATE TABLE statistics (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            layer SMALLINT NOT NULL,
            projection projection_name NOT NULL,
            {_STAT_COLUMNS}
        )""",
        """CREATE TABLE skipped (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            PRIMARY KEY (run_no, sample_index)
        )""",
        """CREATE TABLE targets (
            run_no INTEGER NOT NULL,
            layer SMALLINT NOT NULL,
            projection projection_name NOT NULL,
            parameter VARCHAR NOT NULL,
            rows INTEGER NOT NULL,
            cols INTEGER NOT NULL,
            PRIMARY KEY (run_no, layer, projection)
        )""",
    ),
    2: (
        """CREATE TABLE spectra (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            layer SMALLINT NOT NULL,
            projection projection_name NOT NULL,
            singular_values REAL[] NOT NULL
        )""",
        """CREATE TABLE curve_sums (
            run_no INTEGER NOT NULL,
            projection VARCHAR NOT NULL,
            layer SMALLINT NOT NULL,
            statistic VARCHAR NOT NULL,
            samples BIGINT NOT NULL,
            total DOUBLE NOT NULL,
            squares DOUBLE NOT NULL,
            nonfinite_samples BIGINT NOT NULL,
            PRIMARY KEY (run_no, projection, layer, statistic)
        )""",
        *(_rebuild_curve_sums(name) for name in MATRIX_STATISTICS),
        """CREATE TABLE cosine_sums (
            run_no INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            size INTEGER NOT NULL,
            totals DOUBLE[] NOT NULL,
            counts INTEGER[] NOT NULL,
            PRIMARY KEY (run_no, kind, name)
        )""",
    ),
    3: (
        """CREATE TABLE sample_fields (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            name VARCHAR NOT NULL,
            value DOUBLE NOT NULL,
            PRIMARY KEY (run_no, sample_index, name)
        )""",
    ),
    4: (
        """CREATE TABLE sample_cosines (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            layers SMALLINT[] NOT NULL,
            cosines REAL[] NOT NULL
        )""",
    ),
    5: (
        """CREATE TABLE kept_tests (
            run_a INTEGER NOT NULL,
            run_b INTEGER NOT NULL,
            settings VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            tests VARCHAR NOT NULL,
            PRIMARY KEY (run_a, run_b, settings)
        )""",
    ),
    6: (
        "ALTER TABLE sample_cosines RENAME TO unpacked_sample_cosines",
        """CREATE TABLE sample_cosines (
            run_no INTEGER NOT NULL,
            sample_index INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            layers SMALLINT[] NOT NULL,
            cells REAL[] NOT NULL,
            diagonal REAL[],
            lower REAL[]
        )""",
        "INSERT INTO sample_cosines "  # noqa: S608 (this module's constant SQL)
        + packed_cosines_query("SELECT * FROM unpacked_sample_cosines"),
        "DROP TABLE unpacked_sample_cosines",
    ),
}
assert max(MIGRATIONS) == SCHEMA_VERSION


def apply_migrations(con: duckdb.DuckDBPyConnection, current: int, target: int) -> None:
    """Bring the open file from version ``current`` to ``target``, one transaction per step."""
    for version in range(current + 1, target + 1):
        con.begin()
        try:
            for statement in MIGRATIONS[version]:
                _execute(con, statement)
            con.execute(
                "INSERT OR REPLACE INTO layerscope_meta VALUES ('schema_version', ?)",
                [str(version)],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise


class SchemaVersionUnreadable(LayerscopeError, ValueError):
    """The stored schema version is not one layerscope ever writes (not a positive integer),
    so the file's tables cannot be trusted to be read as any version."""

    def __init__(self, text: str, runs: int | None) -> None:
        if text.strip() == "0" and runs:
            message = f"schema version '0' but the file holds {runs} run{'s' * (runs != 1)}"
        elif text.strip() == "0":
            message = "schema version '0' but the file holds layerscope tables"
        else:
            message = f"unreadable schema version {text!r}"
        super().__init__(message)
        self.text = text
        self.runs = runs


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The schema version as stored (text), or None when the file has no record of one."""
    if "layerscope_meta" not in table_names(con):
        return None
    row = con.execute("SELECT value FROM layerscope_meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def created_tables(version: int) -> set[str]:
    """The tables the migration to ``version`` creates."""
    names = set()
    for statement in MIGRATIONS[version]:
        if isinstance(statement, str):
            match = re.match(r"\s*CREATE TABLE (\w+)", statement)
            if match:
                names.add(match.group(1))
    return names


def table_columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The file's tables, each with the names of its columns."""
    columns: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE table_oid IN (SELECT table_oid FROM duckdb_tables())"
    ).fetchall():
        columns.setdefault(str(table), set()).add(str(column))
    return columns


@functools.cache
def _columns_by_version() -> dict[int, dict[str, set[str]]]:
    """Each version's tables with their columns, as its migrations leave an empty database
    (a version may change a table's columns without creating a table)."""
    found = {}
    with duckdb.connect() as con:  # in memory
        for version in sorted(MIGRATIONS):
            apply_migrations(con, version - 1, version)
            found[version] = table_columns(con)
    return found


def tables_version(tables: Mapping[str, Collection[str]]) -> int | None:
    """The newest schema version whose tables are all present with all their columns
    (``tables`` as :func:`table_columns` gives them; None: not even version 1's)."""
    found = None
    for version, expected in _columns_by_version().items():
        if all(t in tables and columns <= set(tables[t]) for t, columns in expected.items()):
            found = version
    return found


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The stored schema version; 0 for an empty file; None for a file that is not ours.

    Raises :class:`SchemaVersionUnreadable` for a stored value layerscope never writes: not an
    integer, negative, or 0 in a file that has tables (an empty file has no version record).
    """
    tables = table_names(con)
    if not tables:
        return 0
    text = stored_schema_version(con)
    if text is None:
        return None
    try:
        version = int(text)
    except ValueError:
        version = -1
    if version < 1:
        runs = None
        if "runs" in tables:
            with contextlib.suppress(duckdb.Error):
                row = con.execute("SELECT count(*) FROM runs").fetchone()
                runs = int(row[0]) if row else None
        raise SchemaVersionUnreadable(text, runs)
    return version
