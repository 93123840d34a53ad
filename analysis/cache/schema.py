"""The results cache's schema: its tables, its version and reading the version a file holds.

Why a module of its own: the schema is the cache's contract with every file already on a
user's disk, so what its tables hold is kept apart from the code that reads and writes rows.
Nothing here opens a file; it talks SQL on a connection it is given (:mod:`.connection` decides
when). The statements that create the tables and the steps between versions are in
:mod:`.migrations`; how a sample's cosines are laid out in their row, in :mod:`.cosine_packing`.

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
layers SMALLINT[], cells REAL[], diagonal REAL[], lower REAL[])``, a pair's cosines or the cells
above a matrix's diagonal, with its diagonal and the cells below it only where they are not what
symmetry and a unit diagonal say; the layout, why it is lossless, and the SQL that packs and
unpacks it are in :mod:`.cosine_packing`.

A stored version layerscope never writes (``'two'``, ``'-1'``, or ``'0'`` in a file with tables:
an empty file has no record at all) is :class:`SchemaVersionUnreadable`, never guessed at:
reading such a file as empty said "no runs" of a file full of them, and upgrading it from 0 would
fail half-way. ``layerscope doctor`` (:mod:`.health`) says which version its tables (and their
columns) match.
"""

from __future__ import annotations

import contextlib

import duckdb

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import MATRIX_STATISTICS

SCHEMA_VERSION = 6

# What the column types can hold, for code that checks values before it writes them (the
# paper-format import refuses or empties a value here instead of letting DuckDB fail mid-run).
INTEGER_MAX = 2**31 - 1  # INTEGER: sample_index, token counts, samples_total
SMALLINT_MAX = 2**15 - 1  # SMALLINT: layer
# REAL (float32): a double of this magnitude or more rounds to infinity, which DuckDB refuses
# ("out of range for ... FLOAT"); anything smaller rounds to a finite float32 (or to zero).
REAL_LIMIT = 2.0**128 - 2.0**103


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


def rebuild_curve_sums_statement(statistic: str) -> tuple[str, list[object]]:
    """SQL (and its parameter) that (re)computes ``curve_sums`` of one statistic for every run
    from its rows."""
    sql, parameters = curve_sums_query(statistic)
    return f"INSERT OR REPLACE INTO curve_sums {sql}", parameters


def rebuild_curve_sums(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every run's ``curve_sums`` from its statistics rows.

    Used when upgrading a file that has statistics but no sums, and after bulk loads that
    bypass ``write_batch`` (the benchmark).
    """
    con.execute("DELETE FROM curve_sums")
    for name in MATRIX_STATISTICS:
        con.execute(*rebuild_curve_sums_statement(name))


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


def table_columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The file's tables, each with the names of its columns."""
    columns: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE table_oid IN (SELECT table_oid FROM duckdb_tables())"
    ).fetchall():
        columns.setdefault(str(table), set()).add(str(column))
    return columns


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
