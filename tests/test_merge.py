"""``layerscope merge``: the caches of an array job's shards become the unsharded run.

What a user relies on: two ``--shard`` halves merged hold exactly what one process computing
everything stores (every sample's numbers, the curves, the cosines) and the run is complete;
merging the same source again adds nothing; a sample two caches hold with different values is
reported (one line, non-zero exit) and the destination keeps its own; a merge interrupted
between runs leaves finished runs merged and is continued by running it again; sources are never
changed (an older schema is refused, a locked one named)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import duckdb
import pytest
from cache_helpers import computing_elsewhere
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)

from layerscope.analysis.base.records import MATRIX_STATISTICS
from layerscope.analysis.cache import CacheError, ResultsCache, merging, stored_samples
from layerscope.app import cli


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def computed(tmp_path_factory, model_folder):  # noqa: F811
    """One request computed whole, and as shards 0/2 and 1/2 in caches of their own
    (batch size 1: each sample computed alone, so all three agree to the bit)."""
    root = tmp_path_factory.mktemp("merge")
    write_dataset(root / "toy", 5, "toy_no_cot")
    write_dataset(root / "toy", 4, "toy_detailed_cot")
    caches = {}
    for name, shard in (("full", None), ("s0", "0/2"), ("s1", "1/2")):
        caches[name] = root / f"{name}.duckdb"
        argv = ["compute", "--model", str(model_folder), "--dataset", str(root / "toy"),
                "--batch-size", "1", "--max-length", "64", "--db", str(caches[name]), "--quiet"]  # fmt: skip
        if shard:
            argv += ["--shard", shard]
        assert cli.main(argv) == 0
    return caches


def rows(db, run_id):
    """Every stored number of a run by sample: the loss, token counts, texts, statistics,
    spectra and cosines, as the export streams them."""
    cache = ResultsCache(db)
    by_index = {}
    for sample, matrices in cache.iter_sample_statistics(run_id):
        by_index[sample["index"]] = (sample, sorted(matrices, key=lambda m: (m[0], m[1])))
    return by_index


def test_two_shards_merged_equal_the_unsharded_run(capsys, computed, tmp_path):
    merged = tmp_path / "merged.duckdb"
    status, out, err = run(capsys, "merge", computed["s0"], computed["s1"], "--into", merged)
    assert status == 0, err
    full, result = ResultsCache(computed["full"]), ResultsCache(merged)
    assert {r.id for r in result.runs()} == {r.id for r in full.runs()}
    for info in full.runs():
        got = result.run(info.id)
        assert got.status == "complete"
        assert got.samples_done == info.samples_done
        assert rows(merged, info.id) == rows(computed["full"], info.id)
        for metric in ("nuclear_norm", "sigma_max", "loss"):
            for a, b in zip(full.curves([info.id], metric), result.curves([info.id], metric),
                            strict=True):  # fmt: skip
                assert a.count == b.count
                assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(a.mean, b.mean,
                                                                              strict=True))  # fmt: skip
        for projection in info.projections:
            want, have = (
                full.layer_cosines(info.id, projection),
                result.layer_cosines(info.id, projection),
            )
            assert len(want) == len(have)
            # the run's cosine sums were added from the computed (float64) cosines; merged
            # ones from the stored per-sample cosines (float32): equal to float32 precision
            for w_row, h_row in zip(want, have, strict=True):
                assert all(
                    math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) or (x != x and y != y)
                    for x, y in zip(w_row, h_row, strict=True)
                )
    assert out.count("conflicts 0") == 2 * len(full.runs())
    assert "complete" in out.splitlines()[-1]
    # after both halves, runs shows the run complete, with no shard
    status, out, _err = run(capsys, "runs", "--db", merged, "--json")
    assert [(r["status"], r["shard"], r["shards"]) for r in json.loads(out)] == [
        ("complete", None, None)
    ] * len(full.runs())


def test_one_shard_merged_is_partial_and_the_same_source_again_adds_nothing(
    capsys, computed, tmp_path
):
    merged = tmp_path / "m.duckdb"
    assert run(capsys, "merge", computed["s0"], "--into", merged)[0] == 0
    infos = ResultsCache(merged).runs()
    assert all(i.status == "cancelled" for i in infos)  # resumable, not complete
    status, out, _err = run(capsys, "runs", "--db", merged)
    assert out.count("partial, shards 0/2") == len(infos)
    before = rows(merged, infos[0].id)
    status, out, err = run(capsys, "merge", computed["s0"], computed["s0"], "--into", merged)
    assert status == 0
    assert "copied 0" in out and "copied 1" not in out and "copied 2" not in out
    assert "0 sample(s) copied, 0 conflict(s)" in err
    assert rows(merged, infos[0].id) == before
    assert [i.samples_done for i in ResultsCache(merged).runs()] == [i.samples_done for i in infos]
    # the other half completes it; merging everything again changes nothing
    assert run(capsys, "merge", computed["s1"], "--into", merged)[0] == 0
    assert all(i.status == "complete" for i in ResultsCache(merged).runs())
    status, out, err = run(capsys, "merge", computed["s1"], computed["full"], "--into", merged)
    assert status == 0, err
    assert "0 sample(s) copied, 0 conflict(s)" in err


def test_a_conflicting_duplicate_is_reported_and_not_chosen(capsys, computed, tmp_path):
    merged = tmp_path / "m.duckdb"
    shutil.copy(computed["full"], merged)
    altered = tmp_path / "altered.duckdb"
    shutil.copy(computed["s1"], altered)
    run_id = ResultsCache(altered).runs()[0].id
    index = ResultsCache(altered).samples(run_id, sort_by="index")[0].index
    con = duckdb.connect(str(altered))
    old = con.execute(
        "SELECT nuclear_norm FROM statistics s JOIN runs r USING (run_no) WHERE r.id = ? AND "
        "sample_index = ? AND layer = 1 AND projection = 'q'",
        [run_id, index],
    ).fetchone()[0]
    con.execute(
        "UPDATE statistics SET nuclear_norm = nuclear_norm * 1.01 WHERE sample_index = ? AND layer = 1 "
        "AND projection = 'q' AND run_no = (SELECT run_no FROM runs WHERE id = ?)",
        [index, run_id],
    )
    con.close()
    kept = rows(merged, run_id)
    status, out, err = run(capsys, "merge", altered, "--into", merged)
    assert status == 1
    conflicts = [line for line in err.splitlines() if "conflict:" in line]
    assert conflicts == [
        f"layerscope: conflict: run {run_id[:12]} sample {index}: nuclear_norm layer 1 q: "
        f"destination {old:.9g}, source {float(__import__('numpy').float32(old * 1.01)):.9g}"
    ]
    assert "conflicts 1" in out
    assert rows(merged, run_id) == kept  # the destination kept its value
    # a tolerance wide enough accepts the difference
    assert run(capsys, "merge", altered, "--into", merged, "--rtol", "0.02")[0] == 0


def test_an_interrupted_merge_keeps_whole_runs_and_continues(
    capsys, computed, tmp_path, monkeypatch
):
    merged = tmp_path / "m.duckdb"
    real = merging.store_batch
    calls = []

    def failing(con, run_no, batch, samples_by_index, failed=()):
        calls.append(run_no)
        if run_no == 2:
            raise KeyboardInterrupt
        return real(con, run_no, batch, samples_by_index, failed)

    monkeypatch.setattr(merging, "store_batch", failing)
    status, _out, err = run(capsys, "merge", computed["full"], "--into", merged)
    assert status == 130
    assert "the runs merged so far are kept" in err
    (first,) = ResultsCache(merged).runs()  # the first run whole, the second not at all
    assert first.status == "complete"
    assert first.samples_done == ResultsCache(computed["full"]).run(first.id).samples_done
    monkeypatch.setattr(merging, "store_batch", real)
    status, out, err = run(capsys, "merge", computed["full"], "--into", merged)
    assert status == 0
    lines = out.splitlines()
    assert "copied 0" in lines[0] and "copied 0" not in lines[1]
    assert all(i.status == "complete" for i in ResultsCache(merged).runs())
    for info in ResultsCache(computed["full"]).runs():
        assert rows(merged, info.id) == rows(computed["full"], info.id)


def assert_one_line_error(status, err, *fragments):
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerscope: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_sources_that_cannot_be_merged_are_refused_in_one_line(capsys, computed, tmp_path):
    missing = tmp_path / "nope.duckdb"
    assert_one_line_error(*run(capsys, "merge", missing, "--into", tmp_path / "d.duckdb")[::2],
                          str(missing), "no such cache file")  # fmt: skip
    copy = tmp_path / "old.duckdb"
    shutil.copy(computed["s0"], copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE layerscope_meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    before = copy.read_bytes()
    assert_one_line_error(*run(capsys, "merge", copy, "--into", tmp_path / "d.duckdb")[::2],
                          str(copy), "schema version 3", "layerscope runs --db")  # fmt: skip
    assert copy.read_bytes() == before  # never upgraded in place
    assert_one_line_error(*run(capsys, "merge", computed["s0"], "--into", computed["s0"])[::2],
                          "is the destination itself")  # fmt: skip
    assert not (tmp_path / "d.duckdb").exists()


def test_a_destination_or_source_that_is_no_cache_is_refused_before_anything_is_copied(
    capsys, computed, tmp_path
):
    """DuckDB opens a ``.csv`` path as an empty database in memory: a merge "into" it said it
    copied every run and kept none. The destination, and every source, is checked first."""
    csv = tmp_path / "results.csv"
    csv.write_text("run,layer,value\n1,0,0.5\n")
    status, out, err = run(capsys, "merge", computed["s0"], "--into", csv)
    assert_one_line_error(status, err, str(csv), "not a layerscope cache", "a CSV file")
    assert out == "" and csv.read_text() == "run,layer,value\n1,0,0.5\n"
    newer = tmp_path / "newer.duckdb"
    shutil.copy(computed["s1"], newer)
    with duckdb.connect(str(newer)) as con:
        con.execute("UPDATE layerscope_meta SET value = '99' WHERE key = 'schema_version'")
    status, out, err = run(capsys, "merge", computed["s0"], "--into", newer)
    assert_one_line_error(status, err, str(newer), "version 99")
    assert out == ""
    sqlite = tmp_path / "shard.sqlite"
    with sqlite3.connect(sqlite) as con:
        con.execute("CREATE TABLE runs (id TEXT)")
    con.close()
    merged = tmp_path / "merged.duckdb"
    status, out, err = run(capsys, "merge", computed["s0"], sqlite, "--into", merged)
    assert_one_line_error(status, err, str(sqlite), "a SQLite database")
    assert out == "" and not merged.exists()  # the good first source was not merged either


def test_a_destination_removed_during_the_merge_is_not_created_again(computed, tmp_path):
    folder = tmp_path / "merged"
    destination = folder / "m.duckdb"

    def remove(_merge):
        shutil.rmtree(folder)

    with pytest.raises(CacheError, match=f"the folder {folder} disappeared"):
        merging.merge_caches([computed["full"]], destination, on_run=remove)
    assert not folder.exists()


def test_a_source_another_process_writes_is_named(capsys, computed, tmp_path, monkeypatch):
    locked = tmp_path / "locked.duckdb"
    shutil.copy(computed["s0"], locked)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, duckdb
            con = duckdb.connect({str(locked)!r})
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("LAYERSCOPE_LOCK_TIMEOUT", "0")
        status, _out, err = run(capsys, "merge", locked, "--into", tmp_path / "d.duckdb")
        assert_one_line_error(status, err, str(locked), "locked by")
    finally:
        holder.stdin.close()
        holder.wait()


def test_statistics_compared_are_every_stored_one():
    # the comparison reads every statistic column the cache stores
    assert all(f'"{name}"' in stored_samples._STATISTICS_QUERY for name in MATRIX_STATISTICS)


def test_a_run_being_computed_into_the_destination_is_left_out_and_the_others_merged(
    capsys, computed, tmp_path
):
    import socket

    merged = tmp_path / "m.duckdb"
    shutil.copy(computed["s0"], merged)
    con = duckdb.connect(str(merged))
    busy_id, idle_id = (
        con.execute("SELECT id FROM runs WHERE response_type = ?", [name]).fetchone()[0]
        for name in ("none_cot", "toy_detailed_cot")
    )
    with computing_elsewhere(merged, busy_id) as other:
        con.execute(
            "UPDATE runs SET status = 'running', owner_pid = ?, owner_host = ? WHERE id = ?",
            [other, socket.gethostname(), busy_id],
        )
        con.close()
        busy_before = rows(merged, busy_id)
        status, out, err = run(capsys, "merge", computed["s1"], "--into", merged)
    assert status == 1
    errors = [line for line in err.splitlines() if line.startswith("layerscope: error:")]
    assert len(errors) == 1 and "1 run(s) left out" in errors[0] and busy_id[:12] in errors[0]
    assert f"{busy_id[:12]}  toy/none_cot  left out: being computed" in out
    assert rows(merged, busy_id) == busy_before  # the busy run: untouched
    assert rows(merged, idle_id) == rows(computed["full"], idle_id)  # the other: merged whole


def test_a_checkpoint_the_disk_refuses_after_a_merge_is_no_error(
    capsys, computed, tmp_path, monkeypatch
):
    """Every run is committed before the merge folds the log into the file: a full disk at
    that last step loses nothing (readers replay the log), so the merge says what it merged
    and exits 0, and the destination holds the runs."""
    import errno
    import os

    from layerscope.analysis.cache.connection import CacheFile

    def refused(self):
        raise CacheError(f"{self.path}: {os.strerror(errno.ENOSPC)}") from OSError(
            errno.ENOSPC, os.strerror(errno.ENOSPC)
        )

    monkeypatch.setattr(CacheFile, "checkpoint", refused)
    merged = tmp_path / "merged.duckdb"
    status, out, err = run(capsys, "merge", computed["s0"], computed["s1"], "--into", merged)
    assert status == 0, err
    assert "error" not in err
    for run_id in {line.split()[0] for line in out.splitlines()}:
        full_id = ResultsCache(merged).run(run_id).id
        assert rows(merged, full_id) == rows(computed["full"], full_id)
