"""``layerscope export`` of several runs: one tidy table whose every row names its run (id,
model, dataset, response type, mode), the numbers those of each run, the runs in the order given.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import duckdb
import pytest
from cache_helpers import fill_run, nuclear

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.cache.exports import RUN_COLUMNS
from layerscope.app import cli


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, str, str]:
    """A base run of 3 samples (2 layers) and an instruct run of 2 samples (3 layers), of
    different models and types: their rows must stay apart."""
    db = tmp_path / "cache.duckdb"
    cache = ResultsCache(db)
    a = fill_run(cache, "a", 3, layers=2, model="org/model-a", response_type="none_cot")
    b = fill_run(
        cache, "b", 2, layers=3, model="org/model-b", response_type="detailed_cot", mode="instruct"
    )
    return db, a, b


def export(capsys, db: Path, *argv: str | Path) -> tuple[int, str, str]:
    status = cli.main(["export", *map(str, argv), "--db", str(db)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_several_runs_make_one_table_with_run_columns(capsys, two_runs, tmp_path, fmt):
    db, a, b = two_runs
    target = tmp_path / f"both.{fmt}"
    status, out, err = export(capsys, db, b[:8], a[:10], "--format", fmt, "--output", target)
    assert status == 0, err
    assert out == ""
    assert err.strip() == f"wrote {2 * 3 * 4 + 3 * 2 * 4} rows of 2 runs to {target}"
    table = duckdb.sql(f"SELECT * FROM '{target}'")
    assert tuple(table.columns[:6]) == (*RUN_COLUMNS, "sample_index")
    rows = table.fetchall()
    assert len(rows) == 24 + 24
    # The runs in the order given: all of b's rows, then all of a's.
    assert [r[0] for r in rows] == [b] * 24 + [a] * 24
    names = {r[0]: r[1:5] for r in rows}
    assert names == {
        a: ("org/model-a", "math", "none_cot", "base"),
        b: ("org/model-b", "math", "detailed_cot", "instruct"),
    }
    # Each row's numbers are its own run's: b has 3 layers, a only 2.
    column = {name: n for n, name in enumerate(table.columns)}
    for row in rows:
        index, layer, projection = row[column["sample_index"]], row[column["layer"]], row[
            column["projection"]]  # fmt: skip
        assert row[column["nuclear_norm"]] == pytest.approx(nuclear(index, layer, projection))
    assert {r[column["layer"]] for r in rows if r[0] == a} == {0, 1}
    assert {r[column["layer"]] for r in rows if r[0] == b} == {0, 1, 2}
    assert {r[column["sample_index"]] for r in rows if r[0] == b} == {0, 1}


def test_one_run_also_names_itself_in_every_row(capsys, two_runs):
    db, a, _b = two_runs
    status, out, err = export(capsys, db, a, "--format", "csv", "--output", "-")
    assert status == 0, err
    assert err.strip() == f"wrote 24 rows of run {a[:12]} to standard output"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 24
    assert {(r["run_id"], r["model"], r["dataset"], r["response_type"], r["mode"])
            for r in rows} == {(a, "org/model-a", "math", "none_cot", "base")}  # fmt: skip


def test_a_run_named_twice_is_written_once(capsys, two_runs, tmp_path):
    db, a, _b = two_runs
    target = tmp_path / "a.csv"
    status, _, err = export(capsys, db, a, a[:8], "--format", "csv", "--output", target)
    assert status == 0, err
    assert "wrote 24 rows of run" in err
    assert duckdb.sql(f"SELECT count(*) FROM '{target}'").fetchall() == [(24,)]


def test_the_library_takes_a_list_of_runs(two_runs, tmp_path):
    db, a, b = two_runs
    cache = ResultsCache(db)
    target = tmp_path / "both.parquet"
    assert cache.export_table([a, b, a], target, "parquet") == 48
    counts = duckdb.sql(f"SELECT run_id, mode, count(*) FROM '{target}' GROUP BY ALL").fetchall()
    assert sorted(counts) == sorted([(a, "base", 24), (b, "instruct", 24)])


def test_paper_jsonl_takes_one_run(capsys, two_runs, tmp_path):
    db, a, b = two_runs
    target = tmp_path / "x.jsonl"
    status, _, err = export(capsys, db, a, b, "--format", "paper-jsonl", "--output", target)
    assert status == 2
    assert err.strip().startswith("layerscope: error: --format paper-jsonl: one run per file")
    assert not target.exists()


def test_an_unknown_run_among_several_writes_nothing(capsys, two_runs, tmp_path):
    db, a, _b = two_runs
    target = tmp_path / "x.csv"
    status, _, err = export(capsys, db, a, "ffffffff", "--format", "csv", "--output", target)
    assert status != 0
    assert "ffffffff" in err and "Traceback" not in err
    assert not target.exists()


def test_a_quote_in_a_run_prefix_is_a_value_not_sql(capsys, two_runs, tmp_path):
    """The prefixes reach SQL only as parameters: a quote is an unknown run, not an error
    of the query (nor an injection)."""
    db, a, _b = two_runs
    target = tmp_path / "x.csv"
    status, _, err = export(capsys, db, a, "x' OR '1'='1", "--format", "csv", "--output", target)
    assert status != 0
    assert "x' OR '1'='1" in err and "Traceback" not in err
    assert not target.exists()
