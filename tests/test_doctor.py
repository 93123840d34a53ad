"""``layerscope doctor`` and the cache's health checks, on synthetic caches damaged on purpose.

Each test damages a cache the way a user's got damaged (a stored schema version edited, rows
left behind, sums out of step, a process killed, a write-ahead log corrupted or cut short) and
checks that doctor finds it and says what to do, that the repairs it offers leave a cache that
reads and is healthy, and that without being asked it changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from bad_inputs.cache_cases import corrupt_log, leave_in_log, set_schema_version
from cache_helpers import (
    batch,
    computing_elsewhere,
    copy_run,
    ended,
    fill_run,
    make_result,
    make_samples,
    run_id_for,
    targets,
)

from layerscope.analysis.base.environment import (
    EnvironmentVariableError,
    integer_from_env,
    number_from_env,
    size_from_env,
)
from layerscope.analysis.base.records import RunHeader
from layerscope.analysis.cache import ResultsCache, migrations
from layerscope.analysis.cache import schema as cache_schema
from layerscope.analysis.cache.health import repairs, stray_rows, sum_checks
from layerscope.app import cli


@pytest.fixture
def db(tmp_path) -> Path:
    """A healthy cache: a complete run and a cancelled one, everything checkpointed."""
    path = tmp_path / "results.duckdb"
    cache = ResultsCache(path, lock_timeout=5)
    fill_run(cache, "complete", 6, spectra=True)
    fill_run(cache, "cancelled", 5, finish="cancelled")
    return path


def doctor(capsys, *argv: str | Path) -> tuple[int, list[str], str]:
    """Run ``layerscope doctor``; returns the status, stdout lines and stderr."""
    capsys.readouterr()
    status = cli.main(["doctor", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def findings(lines: list[str], severity: str, check: str) -> list[str]:
    return [line for line in lines if line.split()[:2] == [severity, check]]


def dead_pid() -> int:
    """The id of a process that has ended (so that no process has it, for a while)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


def open_run_in_log(path: Path, monkeypatch, count: int = 12, owner: int | None = None) -> str:
    """A running run whose batches of 4 are all still in the write-ahead log, owned by
    ``owner`` (a PID); returns its id."""
    monkeypatch.setenv("LAYERSCOPE_WAL_CHECKPOINT", "1GB")
    cache = ResultsCache(path, lock_timeout=5)
    run_id = run_id_for("open")
    cache.begin_run(
        RunHeader(
            run_id,
            model="synthetic",
            dataset="math",
            response_type="none_cot",
            mode="base",
            samples_total=count,
            targets=targets(4),
            settings={"max_length": 1024, "spectra": False},
            provenance={"layerscope": "test", "batch_size": 4},
        )
    )
    if owner is not None:
        con = duckdb.connect(str(path))
        try:
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
            con.execute("SET checkpoint_threshold = '1GB'")
            con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [owner, run_id])
        finally:
            con.close()
    samples = make_samples(count)
    for start in range(0, count, 4):
        results = [make_result(i) for i in range(start, min(count, start + 4))]
        cache.write_batch(run_id, batch(results), samples)
    monkeypatch.delenv("LAYERSCOPE_WAL_CHECKPOINT")
    assert path.with_name(path.name + ".wal").stat().st_size > 0
    if owner is not None:
        ended(path, run_id)  # this process began it for ``owner``
    return run_id


# ---- a healthy cache --------------------------------------------------------------------------


def test_a_healthy_cache_is_healthy_and_left_byte_identical(db, capsys):
    before = files_of(db)
    status, lines, err = doctor(capsys, "--db", db)
    assert status == 0, lines
    assert f"{db}: healthy" in err
    for check in ("file", "wal", "schema", "runs", "interrupted", "sums", "orphans", "duplicates"):
        assert findings(lines, "ok", check), (check, lines)
    assert not [line for line in lines if line.startswith("problem")]
    assert "2 runs, 11 samples stored" in "\n".join(lines)
    assert "curve sums of 2 runs agree" in "\n".join(lines)
    assert files_of(db) == before  # nothing written, no log or backup created


def test_json_report(db, capsys):
    status, lines, _err = doctor(capsys, "--db", db, "--json")
    report = json.loads("\n".join(lines))
    assert status == 0 and report["healthy"] is True and report["path"] == str(db)
    assert {f["check"] for f in report["findings"]} >= {"file", "schema", "sums", "wal"}
    assert {f["severity"] for f in report["findings"]} == {"ok"}


def test_a_missing_file_is_one_line_and_not_created(tmp_path, capsys):
    missing = tmp_path / "nothing.duckdb"
    status, lines, err = doctor(capsys, "--db", missing)
    assert status == 1 and lines == []
    assert err.strip() == f"layerscope: error: no cache at {missing}"
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def test_an_empty_duckdb_file_is_healthy(tmp_path, capsys):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    status, lines, _err = doctor(capsys, "--db", path)
    assert status == 0 and findings(lines, "ok", "schema")


# ---- schema versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "said"),
    [
        ("0", "schema version '0' but the file holds 2 runs"),
        ("two", "unreadable schema version 'two'"),
        ("-1", "unreadable schema version '-1'"),
    ],
)
def test_a_stored_schema_version_layerscope_never_writes(db, capsys, stored, said):
    set_schema_version(db, stored)
    status = cli.main(["runs", "--db", str(db)])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert err == f"layerscope: error: {db}: {said}: run `layerscope doctor --db {db}`"
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "schema")
    current = cache_schema.SCHEMA_VERSION
    assert said in problem and f"tables are those of schema version {current}" in problem
    assert f"UPDATE layerscope_meta SET value = '{current}'" in problem
    assert findings(lines, "ok", "sums")  # the rows are still checked
    # what doctor proposes brings the file back
    set_schema_version(db, str(current))
    assert len(ResultsCache(db).runs()) == 2


def test_newer_and_older_schema_versions(tmp_path, db, capsys):
    set_schema_version(db, "99")
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "schema")
    current = cache_schema.SCHEMA_VERSION
    assert f"newer than the {current}" in problem and "upgrade layerscope" in problem

    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as con:
        migrations.apply_migrations(con, 0, 1)
    before = old.read_bytes()
    status, lines, _err = doctor(capsys, "--db", old)
    assert status == 0, lines
    [note] = findings(lines, "note", "schema")
    assert f"schema version 1, older than {current}" in note and "upgrades it" in note
    assert old.read_bytes() == before  # doctor does not upgrade it


def test_a_file_that_is_no_cache(tmp_path, capsys):
    text = tmp_path / "notes.duckdb"
    text.write_text("hello\n")
    status, lines, _err = doctor(capsys, "--db", text)
    assert status == 1 and "not a DuckDB file" in findings(lines, "problem", "file")[0]
    status, lines, _err = doctor(capsys, "--db", tmp_path)
    assert status == 1 and "is a folder" in findings(lines, "problem", "file")[0]


# ---- rows -------------------------------------------------------------------------------------


def test_orphaned_rows_are_found_and_repair_removes_them(db, capsys):
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO samples VALUES (99, 0, 1.0, 1, 1, 'i', '', 'o')")
        con.execute(
            "INSERT INTO statistics (run_no, sample_index, layer, projection, nuclear_norm) "
            "VALUES (99, 0, 0, 'q', 1.0), (1, 77, 0, 'q', 1.0)"
        )
        con.execute("INSERT INTO skipped VALUES (99, 3, 'skipped', 'too long')")
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "orphans")
    assert "1 in samples, 2 in statistics, 1 in skipped" in problem and "--repair" in problem

    status, lines, err = doctor(capsys, "--db", db, "--repair")
    assert status == 0, (lines, err)
    assert any(
        "removed orphaned rows: 1 in samples, 2 in statistics, 1 in skipped" in x for x in lines
    )
    [backup] = db.parent.glob("results.duckdb.backup-*")
    assert any(str(backup) in line for line in lines)
    assert findings(lines, "ok", "orphans") and findings(lines, "ok", "sums")
    with duckdb.connect(str(backup), read_only=True) as con:  # the copy is as it was
        assert con.execute("SELECT count(*) FROM samples WHERE run_no = 99").fetchone() == (1,)


@pytest.mark.parametrize("target_exists", [False, True])
def test_repair_never_writes_its_backup_through_a_planted_link(
    db, tmp_path, monkeypatch, capsys, target_exists
):
    """A symbolic link planted at the exact backup name (pointing outside the cache's folder,
    at nothing or at a file) is left alone: nothing is written through it, and the backup goes
    to the next free name, which the report gives."""
    monkeypatch.setattr(repairs, "_stamp", lambda: "20240101-000000")
    outside = tmp_path / "elsewhere" / "stolen.duckdb"
    outside.parent.mkdir()
    if target_exists:
        outside.write_bytes(b"theirs")
    planted = db.with_name(f"{db.name}.backup-20240101-000000")
    planted.symlink_to(outside)
    status, lines, err = doctor(capsys, "--db", db, "--repair")
    assert status == 0, (lines, err)
    assert planted.is_symlink() and os.readlink(planted) == str(outside)
    assert outside.read_bytes() == b"theirs" if target_exists else not outside.exists()
    backup = db.with_name(f"{db.name}.backup-20240101-000000-2")
    assert backup.is_file() and not backup.is_symlink()
    text = "\n".join(lines)
    assert f"copied {db} to {backup} ({planted} was already a symbolic link, left as it is)" in text
    with duckdb.connect(str(backup), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)


def test_set_aside_wal_replaces_and_follows_no_planted_link(db, tmp_path, monkeypatch, capsys):
    open_run_in_log(db, monkeypatch)
    corrupt_log(db)
    wal = db.with_name(db.name + ".wal")
    damaged_bytes = wal.read_bytes()
    monkeypatch.setattr(repairs, "_stamp", lambda: "20240101-000000")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    links = {
        db.with_name(f"{db.name}.backup-20240101-000000"): outside / "backup",
        db.with_name(f"{db.name}.wal.damaged-20240101-000000"): outside / "wal",
    }
    for link, target in links.items():
        link.symlink_to(target)
    status, lines, _err = doctor(capsys, "--db", db, "--set-aside-wal")
    assert status == 0, lines
    assert list(outside.iterdir()) == []
    assert all(link.is_symlink() and os.readlink(link) == str(t) for link, t in links.items())
    aside = db.with_name(f"{db.name}.wal.damaged-20240101-000000-2")
    assert aside.read_bytes() == damaged_bytes and not wal.exists()
    assert db.with_name(f"{db.name}.backup-20240101-000000-2").is_file()


def test_curve_sums_that_disagree_with_the_rows(db, capsys):
    cache = ResultsCache(db)
    run = next(i for i in cache.runs() if i.status == "complete")
    good = cache.curves([run.id], "nuclear_norm", ["q"])[0].mean
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE curve_sums SET total = total + 1000 WHERE run_no = 1 AND layer = 2 "
            "AND projection = 'q' AND statistic = 'nuclear_norm'"
        )
    assert cache.curves([run.id], "nuclear_norm", ["q"])[0].mean != good
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "sums")
    assert run.short_id in problem and "1 of" in problem
    assert "nuclear_norm, q, layer 2" in problem and "--repair" in problem

    status, lines, _err = doctor(capsys, "--db", db, "--repair")
    assert status == 0 and findings(lines, "ok", "sums")
    assert cache.curves([run.id], "nuclear_norm", ["q"])[0].mean == pytest.approx(good)


def test_rows_stored_twice(db, capsys):
    with duckdb.connect(str(db)) as con:
        con.execute(
            "INSERT INTO statistics SELECT * FROM statistics WHERE run_no = 1 AND sample_index = 2"
        )
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "duplicates")
    assert "16 rows stored more than once" in problem and "identical" in problem
    status, lines, _err = doctor(capsys, "--db", db, "--repair")
    assert status == 0, lines
    assert any("removed identical second copies: 16 in statistics" in line for line in lines)

    with duckdb.connect(str(db)) as con:  # a copy that differs: not chosen between
        con.execute(
            "INSERT INTO statistics SELECT * REPLACE (nuclear_norm + 1 AS nuclear_norm) "
            "FROM statistics WHERE run_no = 1 AND sample_index = 3 AND layer = 0"
        )
    status, lines, _err = doctor(capsys, "--db", db, "--repair")
    assert status == 1
    [problem] = findings(lines, "problem", "duplicates")
    assert "4 with differing values" in problem and "recompute the run" in problem
    assert len(list(db.parent.glob("results.duckdb.backup-*"))) == 2  # one per repair


def test_a_stored_sum_that_is_not_finite_disagrees(db, capsys):
    """Recomputed sums are of finite values only, so a stored NaN disagrees whatever the
    tolerance (and a tolerance test alone lets it through: every comparison with NaN is false)."""
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE curve_sums SET total = 'nan' WHERE run_no = 1 AND layer = 1 "
            "AND projection = 'o' AND statistic = 'mean'"
        )
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "sums")
    assert "in 1 of" in problem and "mean, o, layer 1: 6 samples summing to nan stored" in problem


@pytest.mark.parametrize(("duplicates_rows", "sums_rows"), [(7, 50), (100, 200)])
def test_checks_made_in_parts_find_what_whole_tables_show(
    db, capsys, monkeypatch, duplicates_rows, sums_rows
):
    """Doctor groups the keys and recomputes the sums a part of the cache at a time (issue 19:
    memory); with parts of a few rows (one sample of a run, a run's samples split, several runs
    together) it finds the same as with every table in one part, as these small caches are."""
    fill_run(ResultsCache(db), "third", 7, spectra=True)
    with duckdb.connect(str(db)) as con:
        con.execute(  # identical copies, run 1
            "INSERT INTO statistics SELECT * FROM statistics WHERE run_no = 1 AND sample_index = 5"
        )
        con.execute(  # differing copies, run 3
            "INSERT INTO spectra SELECT * REPLACE (singular_values || [0.5] AS singular_values) "
            "FROM spectra WHERE run_no = 3 AND sample_index = 0 AND layer = 3"
        )
        con.execute(  # identical copies, run 2
            "INSERT INTO sample_cosines SELECT * FROM sample_cosines "
            "WHERE run_no = 2 AND sample_index = 4"
        )
        con.execute(
            "UPDATE curve_sums SET squares = squares * 2 WHERE run_no = 3 AND layer = 3 "
            "AND projection = 'v' AND statistic = 'max'"
        )
        con.execute(
            "DELETE FROM curve_sums WHERE run_no = 2 AND layer = 0 AND projection = 'k' "
            "AND statistic = 'stable_rank'"
        )
    status, whole, _err = doctor(capsys, "--db", db)
    assert status == 1
    monkeypatch.setattr(stray_rows, "DUPLICATES_PART_ROWS", duplicates_rows)
    monkeypatch.setattr(sum_checks, "SUMS_PART_ROWS", sums_rows)
    status, parts, _err = doctor(capsys, "--db", db)
    assert status == 1 and parts == whole
    sums = findings(parts, "problem", "sums")  # in run order; run 1's are off by its copies
    assert len(sums) == 3
    assert "in 176 of 176 entries (e.g. mean, k, layer 0: 6 samples summing to" in sums[0]
    assert "in 1 of 176 entries (e.g. stable_rank, k, layer 0: no stored sums)" in sums[1]
    assert "in 1 of 176 entries (e.g. max, v, layer 3: 7 samples summing to" in sums[2]
    duplicates = findings(parts, "problem", "duplicates")  # in run order
    assert len(duplicates) == 3
    assert "16 rows stored more than once; the copies are identical" in duplicates[0]
    assert "6 rows stored more than once; the copies are identical" in duplicates[1]
    assert "4 rows stored more than once; 4 with differing values" in duplicates[2]


def test_an_interrupted_run_is_named_and_resumes(db, capsys):
    cache = ResultsCache(db)
    run_id = fill_run(cache, "killed", 12, finish=None)
    ended(db, run_id)
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM samples WHERE sample_index >= 8 AND run_no = 3")
        con.execute("DELETE FROM statistics WHERE sample_index >= 8 AND run_no = 3")
        con.execute("DELETE FROM sample_cosines WHERE sample_index >= 8 AND run_no = 3")
        con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [dead_pid(), run_id])
    cache.rebuild_summaries()
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "interrupted")
    assert problem.endswith("interrupted: 8 of 12 samples stored; the same command resumes")
    capsys.readouterr()
    assert cli.main(["runs", "--db", str(db)]) == 0
    assert "interrupted" in capsys.readouterr().out
    assert cli.main(["runs", "--json", "--db", str(db)]) == 0
    listed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[run_id]["interrupted"] is True and listed[run_id]["samples"] == 8

    fill_run(cache, "killed", 12)  # the same command: only the missing samples are written
    assert cache.run(run_id).samples_done == 12 and cache.run(run_id).status == "complete"
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 0, lines


def test_a_run_being_computed_is_a_note(db, capsys):
    run_id = fill_run(ResultsCache(db), "live", 4, finish=None)
    ended(db, run_id)
    with computing_elsewhere(db, run_id) as other:
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [other, run_id])
        status, lines, _err = doctor(capsys, "--db", db)
    assert status == 0, lines
    [note] = findings(lines, "note", "interrupted")
    assert f"being computed by PID {other} right now (4 of 4 samples stored)" in note


# ---- the write-ahead log ----------------------------------------------------------------------


def test_a_damaged_log_is_found_and_set_aside(db, monkeypatch, capsys):
    run_id = open_run_in_log(db, monkeypatch)
    assert ResultsCache(db).run(run_id).samples_done == 12
    corrupt_log(db)
    wal = db.with_name(db.name + ".wal")
    damaged_bytes = wal.read_bytes()

    assert cli.main(["runs", "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"layerscope: error: {wal}: the write-ahead log is damaged (checksum")
    assert f"`layerscope doctor --db {db} --set-aside-wal` moves it aside" in err

    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1 and "--set-aside-wal" in findings(lines, "problem", "wal")[0]

    status, lines, _err = doctor(capsys, "--db", db, "--set-aside-wal")
    assert status == 0, lines
    [backup] = db.parent.glob("results.duckdb.backup-*")
    [aside] = db.parent.glob("results.duckdb.wal.damaged-*")
    assert not wal.exists() and aside.read_bytes() == damaged_bytes
    text = "\n".join(lines)
    assert f"copied {db} to {backup}" in text and f"moved {wal} to {aside}" in text
    assert "the cache reads again" in text
    assert len(ResultsCache(db).runs()) == 2  # what was checkpointed before is all there
    capsys.readouterr()
    assert cli.main(["runs", "--db", str(db)]) == 0
    # the run whose batches were in the log is computed again by the same command
    fill_run(ResultsCache(db), "open", 12)
    assert ResultsCache(db).run(run_id).samples_done == 12
    assert doctor(capsys, "--db", db)[0] == 0


def test_a_log_whose_header_is_damaged_is_not_silently_dropped(db, capsys):
    leave_in_log(db)
    corrupt_log(db, header=True)
    wal = db.with_name(db.name + ".wal")
    damaged_bytes = wal.read_bytes()
    for argv in (["runs"], ["compute", "--model", "tiny", "--dataset", "math"]):
        assert cli.main([*argv, "--db", str(db)]) == 1
        assert "DuckDB ignored it" in capsys.readouterr().err
    assert wal.read_bytes() == damaged_bytes  # no write got to overwrite it
    status, lines, _err = doctor(capsys, "--db", db, "--set-aside-wal")
    assert status == 0, lines


@pytest.mark.parametrize("kept", [5, 30, 100, 1000])
def test_a_log_cut_inside_its_first_commit_is_no_damage(db, capsys, kept):
    """A writer killed during its first commit after a checkpoint leaves a log of which DuckDB
    replays nothing; that is a normal crash state (nothing in it was committed), not a damaged
    header, and every command must go on working."""
    leave_in_log(db)
    wal = db.with_name(db.name + ".wal")
    wal.write_bytes(wal.read_bytes()[:kept])
    assert cli.main(["runs", "--json", "--db", str(db)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    fill_run(ResultsCache(db), "after", 3)  # writing goes on, and replaces the torn log
    assert ResultsCache(db).run(run_id_for("after")).samples_done == 3


def test_set_aside_refuses_a_log_that_replays(db, capsys, monkeypatch):
    open_run_in_log(db, monkeypatch, count=4)
    before = files_of(db)
    assert cli.main(["doctor", "--set-aside-wal", "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerscope: error: ") and "is not damaged" in err
    assert files_of(db) == before


def test_a_truncated_log_loses_its_last_batch_and_the_run_resumes(db, monkeypatch, capsys):
    run_id = open_run_in_log(db, monkeypatch, owner=dead_pid())
    wal = db.with_name(db.name + ".wal")
    wal.write_bytes(wal.read_bytes()[:-1])  # cut into the last batch's transaction
    info = ResultsCache(db).run(run_id)
    assert (info.status, info.interrupted, info.samples_done) == ("cancelled", True, 8)
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    assert "ends in an incomplete entry" in findings(lines, "problem", "wal")[0]
    [interrupted] = findings(lines, "problem", "interrupted")
    assert "interrupted: 8 of 12 samples stored; the same command resumes" in interrupted
    assert findings(lines, "ok", "sums")  # the lost batch took its sums with it

    fill_run(ResultsCache(db), "open", 12)  # resuming recomputes the last batch
    info = ResultsCache(db).run(run_id)
    assert (info.status, info.samples_done) == ("complete", 12)
    assert doctor(capsys, "--db", db)[0] == 0


def test_the_log_of_a_compute_running_now_is_no_damage(db, monkeypatch, capsys):
    """A compute writing its batch when doctor reads finds the log's last entry incomplete:
    that is the entry being written, not damage. Doctor knows a writer is live by the lock
    every compute holds (cache/liveness.py), says so, and finds nothing to repair; once the
    writer is gone, the same log is damage again."""
    run_id = open_run_in_log(db, monkeypatch)
    ended(db, run_id)  # another process computes it (the log is left as it is)
    wal = db.with_name(db.name + ".wal")
    wal.write_bytes(wal.read_bytes()[:-1])  # its entry half written
    with computing_elsewhere(db, run_id):
        status, lines, _err = doctor(capsys, "--db", db)
        assert status == 0, lines
        [note] = findings(lines, "note", "wal")
        assert "is being written by a compute running now" in note
        [running] = findings(lines, "note", "interrupted")
        assert "right now (8 of 12 samples stored)" in running
        assert not [line for line in lines if line.startswith("problem")]
    # the writer killed: the same log is an incomplete entry, the run interrupted
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    assert "ends in an incomplete entry" in findings(lines, "problem", "wal")[0]
    assert findings(lines, "problem", "interrupted")


# ---- environment variables --------------------------------------------------------------------


def test_doctor_checks_the_environment(db, capsys, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_LOCK_TIMEOUT", "abc")
    monkeypatch.setenv("LAYERSCOPE_WAL_CHECKPOINT", "16MB")
    status, lines, _err = doctor(capsys, "--db", db)
    assert status == 1
    [problem] = findings(lines, "problem", "environment")
    assert "LAYERSCOPE_LOCK_TIMEOUT='abc'" in problem
    assert findings(lines, "ok", "environment") == [
        "ok       environment  LAYERSCOPE_WAL_CHECKPOINT=16MB: valid"
    ]
    assert findings(lines, "ok", "sums")  # the rest is checked with the default timeout


@pytest.mark.parametrize(
    ("read", "value", "expected"),
    [
        (lambda: number_from_env("LS_TEST", 30.0, minimum=0), "2.5", 2.5),
        (lambda: number_from_env("LS_TEST", 30.0, minimum=0), "  ", 30.0),
        (lambda: integer_from_env("LS_TEST", 16384, power_of_two=True), "32768", 32768),
        (lambda: size_from_env("LS_TEST", "8MB"), "512KiB", 512 * 1024),
        (lambda: size_from_env("LS_TEST", "8MB"), "1.5 GB", 1_500_000_000),
        (lambda: size_from_env("LS_TEST", "8MB"), "4096", 4096),
    ],
)
def test_environment_readers(monkeypatch, read, value, expected):
    monkeypatch.setenv("LS_TEST", value)
    assert read() == expected


@pytest.mark.parametrize(
    ("read", "value", "allowed"),
    [
        (lambda: number_from_env("LS_TEST", 30.0, minimum=0), "abc", "a number, at least 0"),
        (lambda: number_from_env("LS_TEST", 30.0, minimum=0), "nan", "a number"),
        (lambda: number_from_env("LS_TEST", 30.0, minimum=0), "-1", "at least 0"),
        (lambda: integer_from_env("LS_TEST", 4, minimum=1, maximum=8), "9", "from 1 to 8"),
        (lambda: integer_from_env("LS_TEST", 4, power_of_two=True), "6", "a power of two"),
        (lambda: size_from_env("LS_TEST", "8MB"), "8 parsecs", "a size such as 8MB"),
    ],
)
def test_environment_readers_name_the_variable(monkeypatch, read, value, allowed):
    monkeypatch.setenv("LS_TEST", value)
    with pytest.raises(EnvironmentVariableError) as raised:
        read()
    message = str(raised.value)
    assert message.startswith(f"environment variable LS_TEST={value!r} is not valid: expected")
    assert allowed in message and "\n" not in message
    assert isinstance(raised.value, ValueError)


def test_bad_variables_fail_when_used_not_at_import_and_doctor_needs_no_torch():
    """They are read when used: a bad one fails the command that uses it, not the import; and
    the health checks and the command import neither torch nor the explorer."""
    env = {"LAYERSCOPE_BLOCK_SIZE": "abc", "LAYERSCOPE_WAL_CHECKPOINT": "abc"}
    code = (
        "import sys, layerscope.analysis.cache.health, layerscope.app.cli.doctor; "
        "print(sorted(m for m in ('torch', 'textual') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


# ---- a big cache ------------------------------------------------------------------------------

# The peak is read from /proc (VmHWM, in KiB): getrusage's ru_maxrss of a child started by fork
# and exec keeps the forking process's peak (pytest's) when that is larger.
PEAK_MEMORY_CODE = (
    "import re, sys; from layerscope.app import cli; status = cli.main(sys.argv[1:]); "
    "status_text = open('/proc/self/status').read(); "
    "print(int(re.search(r'VmHWM:\\s*(\\d+) kB', status_text).group(1)) * 1024); sys.exit(status)"
)


def doctor_peak_memory(path: Path) -> int:
    """Run ``layerscope doctor`` on ``path`` in a fresh process; returns its peak resident
    memory in bytes (the process's own high-water mark, so nothing else running counts)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_CODE, "doctor", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    *lines, peak = done.stdout.splitlines()
    assert findings(lines, "ok", "duplicates") and findings(lines, "ok", "sums"), lines
    return int(peak)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_doctor_memory_does_not_grow_with_the_runs(tmp_path):
    """Issue 19: on the paper's whole study in one cache (300 runs of 500 samples, 18M
    statistics rows) doctor held 7.4 GB, growing with the cache, because the duplicates check
    grouped every row of every table at once, and the sums check held a copy of all the
    statistics rows. Every check now scans, groups and sums a bounded part at a time.

    Between a cache of 4 runs and one of 24 (6,000 samples, 720,000 statistics rows), the peak
    may grow by the file's growth, the blocks of it DuckDB keeps (capped at
    :data:`~layerscope.analysis.cache.health.examining.MEMORY_LIMIT`), and
    a margin; nothing else may grow with the cache. Before, it grew by about 180 MiB here, nine
    times the file's growth."""
    small = tmp_path / "small.duckdb"
    run_id = fill_run(ResultsCache(small), "base", 250, layers=30, batch_size=50)
    copy_run(small, run_id, 3)
    big = tmp_path / "big.duckdb"
    shutil.copy2(small, big)
    copy_run(big, run_id, 20)
    with duckdb.connect(str(big), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM statistics").fetchone() == (24 * 250 * 120,)
    small_peak, big_peak = doctor_peak_memory(small), doctor_peak_memory(big)
    growth = big.stat().st_size - small.stat().st_size
    mib = 2**20
    assert big_peak - small_peak <= growth + 40 * mib, (
        f"peak {small_peak / mib:.0f} MiB with 4 runs, {big_peak / mib:.0f} MiB with 24; "
        f"the file grew by {growth / mib:.0f} MiB"
    )
