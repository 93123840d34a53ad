"""Tests of significance kept in the cache file: a pair of runs is tested once, not per command.

Why in the file: every ``show`` is a fresh process, and at study scale a pair's paired tests
cost about 1.5 s of CPU (scipy's import, both runs' per-sample values, 9,999 sign patterns per
projection) against 0.4 s for everything else the command does. The tests are a pure function
of what both runs stored and of the test settings (:mod:`layerscope.analysis.results.compare`, "Reuse of
the tests"), so they are kept under both runs, a digest of the settings (``settings``: metric,
length range, permutations, seed, the format of the tests) and a digest of what they were
computed from (``state``: both runs' stored counts and start, the compared curves). A lookup
whose state differs is a miss; the next computation replaces the row, so a pair keeps one row
per settings however often its runs grew.

Kept best-effort: a cache another process is writing, or a file the user may not write, leaves
the tests uncomputed-next-time, never the command failed or waiting (see
:meth:`ResultsCache.keep_tests`). A row that no longer decodes (the format changed) is a miss.
``tests`` is JSON: the :class:`ProjectionSignificance` records of the pair, NaN as ``NaN``;
floats are written with their shortest round-tripping repr, so a kept test reads back the very
numbers computed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import duckdb

from layerscope.analysis.curves.significance import LayerTest, ProjectionSignificance

__all__ = ["decode_tests", "encode_tests", "keep", "kept"]


def encode_tests(rows: list[ProjectionSignificance]) -> str:
    return json.dumps([asdict(row) for row in rows], separators=(",", ":"))


def decode_tests(text: str) -> list[ProjectionSignificance] | None:
    """The kept records, or None when they do not decode into today's records."""
    try:
        records: list[dict[str, Any]] = json.loads(text)
        return [
            ProjectionSignificance(
                **{**record, "layers": [LayerTest(**layer) for layer in record["layers"]]}
            )
            for record in records
        ]
    except (TypeError, KeyError, ValueError):
        return None


def kept(
    con: duckdb.DuckDBPyConnection, run_a: int, run_b: int, settings: str, state: str
) -> list[ProjectionSignificance] | None:
    row = con.execute(
        "SELECT tests FROM kept_tests WHERE run_a = ? AND run_b = ? AND settings = ? AND state = ?",
        [run_a, run_b, settings, state],
    ).fetchone()
    return None if row is None else decode_tests(str(row[0]))


def keep(
    con: duckdb.DuckDBPyConnection,
    run_a: int,
    run_b: int,
    settings: str,
    state: str,
    rows: list[ProjectionSignificance],
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO kept_tests VALUES (?, ?, ?, ?, ?)",
        [run_a, run_b, settings, state, encode_tests(rows)],
    )
