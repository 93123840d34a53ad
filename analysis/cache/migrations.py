"""The steps between the cache's schema versions, and which version a file's tables match.

Why apart from :mod:`.schema`: the tables a file holds now are what readers and writers rely
on; how a file of any older version gets there is a history that grows with every version and
runs only when a file is created or upgraded. :data:`MIGRATIONS` lists, per version, the
statements that bring a file from the previous version to it; a new file runs them all, an older
file is upgraded in place (one transaction per step), a file from a newer layerscope is refused
(:mod:`.connection` decides when, and refuses). Being the one definition of every version's
tables, the migrations also say which tables a version created (:func:`created_tables`) and
which version a file's tables and columns match (:func:`tables_version`), which ``layerscope
doctor`` (:mod:`.health`) reports for a file whose version record is damaged.

The upgrade to version 6 rewrites every cosine row in its one transaction (about 1.2 s per 5,000
samples of a 32-layer model on a loaded 2-core machine), so other processes wait for the file as
for any write, up to their lock timeout. The file does not shrink: the packed rows are written
before the old ones are dropped, and DuckDB reuses the freed blocks for later writes. A process
that opened the file before the upgrade with an older layerscope names ``cosines``, which no
longer exists: its next cosine read or write fails instead of misreading the cells.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping

import duckdb

from layerscope.analysis.base.records import MATRIX_STATISTICS, PROJECTIONS
from layerscope.analysis.cache.cosine_packing import packed_cosines_query
from layerscope.analysis.cache.schema import (
    SCHEMA_VERSION,
    rebuild_curve_sums_statement,
    table_columns,
)

__all__ = ["MIGRATIONS", "apply_migrations", "created_tables", "tables_version"]

# A statement, or a statement with its parameters.
Statement = str | tuple[str, list[object]]

_STAT_COLUMNS = ", ".join(f'"{name}" REAL' for name in MATRIX_STATISTICS)
# DDL takes no parameters: the labels are this package's constant projection names.
_PROJECTION_ENUM = ", ".join(f"'{p}'" for p in PROJECTIONS)


def _execute(con: duckdb.DuckDBPyConnection, statement: Statement) -> None:
    if isinstance(statement, str):
        con.execute(statement)
    else:
        con.execute(*statement)


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
        *(rebuild_curve_sums_statement(name) for name in MATRIX_STATISTICS),
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


def created_tables(version: int) -> set[str]:
    """The tables the migration to ``version`` creates."""
    names = set()
    for statement in MIGRATIONS[version]:
        if isinstance(statement, str):
            match = re.match(r"\s*CREATE TABLE (\w+)", statement)
            if match:
                names.add(match.group(1))
    return names


@functools.cache
def _columns_by_version() -> dict[int, dict[str, set[str]]]:
    """Each version's tables with their columns, as its migrations leave an empty database
    (a version may change a table's columns without creating a table)."""
    from layerscope.analysis.cache.connection import OFFLINE  # imports this module

    found = {}
    with duckdb.connect(config=OFFLINE) as con:  # in memory, offline as every connection
        for version in sorted(MIGRATIONS):
            apply_migrations(con, version - 1, version)
            found[version] = table_columns(con)
    return found


def tables_version(tables: Mapping[str, Collection[str]]) -> int | None:
    """The newest schema version whose tables are all present with all their columns
    (``tables`` as :func:`~.schema.table_columns` gives them; None: not even version 1's)."""
    found = None
    for version, expected in _columns_by_version().items():
        if all(t in tables and columns <= set(tables[t]) for t, columns in expected.items()):
            found = version
    return found
