"""The results cache on synthetic engine output: what is stored, what comes back, and the
file-level guarantees (schema versions, locks, proportionate size)."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import textwrap

import duckdb
import pytest
from cache_helpers import (
    batch,
    computing_elsewhere,
    ended,
    fill_run,
    make_result,
    make_samples,
    nuclear,
    run_id_for,
    small_header,
    targets,
)

from layerscope.analysis.base.outputs import OutputError
from layerscope.analysis.base.records import RunHeader, SkippedSample
from layerscope.analysis.cache import (
    SCHEMA_VERSION,
    CacheError,
    CacheLockedError,
    ResultsCache,
    SchemaVersionError,
    UnknownRunError,
    default_db_path,
    migrations,
)
from layerscope.analysis.cache.connection import CacheFile
from layerscope.analysis.curves.statistics import ci95, t_critical_975


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "results.duckdb", lock_timeout=5)


def test_default_path_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LAYERSCOPE_DB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "layerscope" / "results.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "mine.duckdb"))
    assert default_db_path() == tmp_path / "mine.duckdb"


def test_reading_a_missing_cache_finds_nothing_and_creates_nothing(cache):
    assert cache.runs() == []
    assert cache.done_indices(run_id_for("x")) == set()
    with pytest.raises(UnknownRunError, match="has no runs"):
        cache.run("abc")
    assert not cache.path.exists()


def test_run_round_trip_with_counts_and_provenance(cache):
    run_id = fill_run(cache, "a", 10, layers=4)
    [info] = cache.runs()
    assert info.id == run_id
    assert (info.model, info.dataset, info.response_type, info.mode) == (
        "synthetic",
        "math",
        "none_cot",
        "base",
    )
    assert info.status == "complete"
    assert (info.samples_total, info.samples_done, info.samples_skipped) == (10, 10, 0)
    assert info.layers == 4 and info.projections == ("q", "k", "v", "o")
    assert info.settings["max_length"] == 1024
    assert info.provenance["batch_size"] == 4
    assert info.provenance["samples_done"] == 10
    assert len(info.provenance["sessions"]) == 1
    assert info.started_at is not None and info.finished_at >= info.started_at
    assert cache.run(run_id[:6]) == info
    assert cache.targets(run_id)[0].parameter == "model.layers.0.self_attn.q_proj.weight"


def test_curves_are_sample_means_with_std_and_confidence_interval(cache):
    run_id = fill_run(cache, "a", 7, layers=3)
    curves = cache.curves([run_id], "nuclear_norm")
    assert [c.projection for c in curves] == ["q", "k", "v", "o"]
    k = curves[1]
    assert k.layers == [0, 1, 2]
    for layer in k.layers:
        values = [nuclear(i, layer, "k") for i in range(7)]
        assert k.mean[layer] == pytest.approx(statistics.mean(values))
        assert k.std[layer] == pytest.approx(statistics.stdev(values), rel=1e-6)
        assert k.count[layer] == 7
        expected_ci = 2.4469 * statistics.stdev(values) / math.sqrt(7)
        assert ci95(k)[layer] == pytest.approx(expected_ci, rel=1e-4)
    assert k.excluded_nonfinite == 0
    only_q = cache.curves([run_id], "sigma_max", projections=["q"])
    assert [c.projection for c in only_q] == ["q"]
    loss = cache.curves([run_id], "loss")
    assert loss[0].mean == [pytest.approx(statistics.mean(1 + i / 10 for i in range(7)))]


def test_a_sample_with_a_nonfinite_value_is_left_out_of_the_whole_curve(cache):
    run_id = run_id_for("nan")
    cache.begin_run(
        RunHeader(
            run_id,
            model="m",
            dataset="d",
            response_type="t",
            mode="base",
            samples_total=3,
            targets=targets(2),
            settings={},
            provenance={},
        )
    )
    results = [
        make_result(0, 2),
        make_result(1, 2, overrides={(1, "q"): {"nuclear_norm": math.nan}}),
        make_result(2, 2, overrides={(0, "q"): {"nuclear_norm": math.inf}}),
    ]
    cache.write_batch(run_id, batch(results), make_samples(3))
    q, k = cache.curves([run_id], "nuclear_norm", projections=["q", "k"])
    assert q.excluded_nonfinite == 2
    assert q.count == [1, 1]
    assert q.mean == [nuclear(0, 0, "q"), nuclear(0, 1, "q")]
    assert math.isnan(q.std[0]) and math.isnan(ci95(q)[0])
    assert k.excluded_nonfinite == 0 and k.count == [3, 3]


def test_per_run_sums_agree_with_a_scan_of_the_rows(cache):
    run_id = run_id_for("agree")
    cache.begin_run(
        RunHeader(
            run_id,
            model="m",
            dataset="d",
            response_type="t",
            mode="base",
            samples_total=9,
            targets=targets(3),
            settings={},
            provenance={},
        )
    )
    rng = random.Random(1)
    for start in (0, 3, 6):
        results = []
        for index in range(start, start + 3):
            overrides = {(1, "v"): {"sigma_max": math.nan}} if index == 4 else {}
            result = make_result(index, 3, overrides=overrides)
            for matrix in result.matrices:
                matrix.values = {k: v * rng.uniform(0.5, 1.5) for k, v in matrix.values.items()}
            results.append(result)
        cache.write_batch(run_id, batch(results), make_samples(9))
    everything = (0, 10**6)
    for metric in ("sigma_max", "nuclear_norm", "effective_rank"):
        summed = cache.curves([run_id], metric)
        scanned = cache.curves([run_id], metric, response_tokens=everything)
        for a, b in zip(summed, scanned, strict=True):
            assert (a.projection, a.layers, a.count) == (b.projection, b.layers, b.count)
            assert a.excluded_nonfinite == b.excluded_nonfinite
            assert a.mean == pytest.approx(b.mean, rel=1e-12)
            assert a.std == pytest.approx(b.std, rel=1e-9)
    v = cache.curves([run_id], "sigma_max", projections=["v"])[0]
    assert v.excluded_nonfinite == 1 and v.count == [8, 8, 8]
    before = cache.curves([run_id], "sigma_max")
    cache.rebuild_summaries()
    after = cache.curves([run_id], "sigma_max")
    for a, b in zip(before, after, strict=True):
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.count == b.count
        assert a.excluded_nonfinite == b.excluded_nonfinite


def test_length_control_restricts_samples_by_response_tokens(cache):
    run_id = fill_run(cache, "len", 10, layers=2, response_tokens=lambda i: 10 * i)
    [q] = cache.curves([run_id], "nuclear_norm", projections=["q"], response_tokens=(20, 50))
    kept = [2, 3, 4, 5]
    assert q.count == [4, 4]
    assert q.mean[1] == pytest.approx(statistics.mean(nuclear(i, 1, "q") for i in kept))
    rows = cache.samples(run_id, sort_by="index", descending=False, response_tokens=(20, 50))
    assert [r.index for r in rows] == kept
    with pytest.raises(ValueError, match="empty"):
        cache.curves([run_id], "nuclear_norm", response_tokens=(5, 1))


def test_samples_sorted_with_per_sample_means(cache):
    run_id = fill_run(cache, "s", 5, layers=2)
    rows = cache.samples(run_id, sort_by="loss", descending=True, limit=3)
    assert [r.index for r in rows] == [4, 3, 2]
    top = rows[0]
    assert top.instruction == "Question 4: what is 4 + 4?" and top.output == "The answer is 8."
    assert top.response_tokens == 24 and top.prompt_tokens == 14
    expected = statistics.mean(nuclear(4, layer, p) for layer in range(2) for p in "qkvo")
    assert top.stats["nuclear_norm"] == pytest.approx(expected)
    ascending = cache.samples(run_id, sort_by="nuclear_norm", descending=False)
    assert [r.index for r in ascending] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot sort"):
        cache.samples(run_id, sort_by="nonsense")


def test_sample_curve_spectra_and_cosines(cache):
    run_id = fill_run(cache, "x", 4, layers=3, spectra=True)
    assert cache.sample_curve(run_id, 2, "nuclear_norm", "v") == [
        nuclear(2, layer, "v") for layer in range(3)
    ]
    spectra = cache.sample_spectra(run_id, 1, "q")
    assert spectra[2] == pytest.approx([nuclear(1, 2, "q") * f for f in (0.5, 0.3, 0.2)])
    cosines = cache.layer_cosines(run_id, "k")
    assert cosines[0][0] == pytest.approx(1.0)
    assert cosines[0][1] == pytest.approx(0.2 + 0.01 * statistics.mean(range(4)))
    assert cache.pair_cosines(run_id, "k-v") == pytest.approx([0.3 + 0.015] * 3)
    assert cache.layer_cosines(run_id, "gate") == []


def test_no_sample_is_ever_stored_twice(cache):
    run_id = fill_run(cache, "dup", 6, layers=2, finish=None)
    again = [make_result(i, 2) for i in (4, 5, 6)]
    assert cache.write_batch(run_id, batch(again), make_samples(7)) == 1
    info = cache.run(run_id)
    assert info.samples_done == 7
    [q] = cache.curves([run_id], "nuclear_norm", projections=["q"])
    assert q.count == [7, 7]
    assert cache.done_indices(run_id) == set(range(7))


def test_skipped_are_done_but_failed_are_retried(cache):
    run_id = fill_run(cache, "skip", 2, layers=2, finish=None)
    cache.write_batch(
        run_id,
        batch([], [SkippedSample(2, "no response token left after truncation")]),
        make_samples(5),
        failed=[SkippedSample(3, "RuntimeError: boom")],
    )
    info = cache.run(run_id)
    assert (info.samples_done, info.samples_skipped, info.samples_failed) == (2, 1, 1)
    assert cache.done_indices(run_id) == {0, 1, 2}
    reasons = {s.index: s.reason for s in cache.skipped(run_id)}
    assert reasons == {
        2: "no response token left after truncation",
        3: "failed: RuntimeError: boom",
    }
    cache.write_batch(run_id, batch([make_result(3, 2)]), make_samples(5))
    info = cache.run(run_id)
    assert (info.samples_done, info.samples_failed) == (3, 0)


def test_unknown_and_ambiguous_run_ids(cache):
    fill_run(cache, "a", 1, layers=1)
    fill_run(cache, "b", 1, layers=1)
    with pytest.raises(UnknownRunError, match="unknown run 'ffff0000'"):
        cache.run("ffff0000")
    with pytest.raises(UnknownRunError, match="hexadecimal"):
        cache.run("not-a-run")
    ids = [r.id for r in cache.runs()]
    common = next(
        (a[:n] for n in range(1, 8) for a in ids for b in ids if a != b and a[:n] == b[:n]),
        None,
    )
    if common:
        with pytest.raises(UnknownRunError, match="ambiguous"):
            cache.run(common)
    with pytest.raises(ValueError, match="unknown metric"):
        cache.curves(ids[:1], "nuclear")


def test_resuming_a_run_keeps_session_history_and_refuses_a_live_owner(cache):
    run_id = fill_run(cache, "r", 2, layers=1, finish="cancelled")
    info = cache.begin_run(
        RunHeader(
            run_id,
            model="synthetic",
            dataset="math",
            response_type="none_cot",
            mode="base",
            samples_total=2,
            targets=targets(1),
            settings={},
            provenance={"batch_size": 8},
        )
    )
    assert info.status == "running"
    assert [s["batch_size"] for s in info.provenance["sessions"]] == [4, 8]
    ended(cache.path, run_id)
    with computing_elsewhere(cache.path, run_id) as other:
        with duckdb.connect(str(cache.path)) as con:
            con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [other, run_id])
        assert cache.run(run_id).status == "running"
        with pytest.raises(CacheError, match=f"being computed by PID {other}"):
            fill_run(cache, "r", 2, layers=1)
    # Its owner is gone (killed): reported as cancelled, and resumable.
    assert cache.run(run_id).status == "cancelled"
    fill_run(cache, "r", 2, layers=1)
    assert cache.run(run_id).status == "complete"


def test_export_table_parquet_and_csv(cache, tmp_path):
    run_id = fill_run(cache, "e", 3, layers=2)
    for fmt in ("parquet", "csv"):
        target = tmp_path / f"out.{fmt}"
        assert cache.export_table(run_id, target, fmt) == 3 * 2 * 4
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        rows = duckdb.sql(
            f"SELECT sample_index, layer, projection, parameter, nuclear_norm "
            f"FROM {reader}('{target}') ORDER BY ALL"
        ).fetchall()
        assert len(rows) == 24
        assert rows[0][3] == "model.layers.0.self_attn.k_proj.weight"
        assert rows[-1][4] == pytest.approx(nuclear(2, 1, "v"))
    with pytest.raises(OutputError, match="does not exist"):
        cache.export_table(run_id, tmp_path / "no" / "such" / "x.csv", "csv")


def test_storage_stays_proportionate(cache):
    """500 samples of a 32-layer model without spectra: a few MB, with values as
    incompressible as real ones (random mantissas), written in 20 transactions."""
    rng = random.Random(0)
    run_id = run_id_for("big")
    cache.begin_run(
        RunHeader(
            run_id,
            model="m",
            dataset="d",
            response_type="t",
            mode="base",
            samples_total=500,
            targets=targets(32),
            settings={},
            provenance={},
        )
    )
    samples = make_samples(500)
    for start in range(0, 500, 25):
        results = []
        for index in range(start, start + 25):
            result = make_result(index, 32)
            for matrix in result.matrices:
                matrix.values = {k: v * rng.uniform(0.5, 1.5) for k, v in matrix.values.items()}
            results.append(result)
        cache.write_batch(run_id, batch(results), samples)
    cache.finish_run(run_id, "complete")
    size_mb = cache.path.stat().st_size / 1e6
    assert not cache.path.with_name(cache.path.name + ".wal").exists()
    assert size_mb < 5, f"{size_mb:.1f} MB"


def test_t_critical_values():
    assert t_critical_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_critical_975(31) == pytest.approx(2.0395, abs=2e-4)
    assert t_critical_975(100_000) == pytest.approx(1.95997, abs=1e-4)
    assert math.isnan(t_critical_975(0))
    scipy_stats = pytest.importorskip("scipy.stats")
    for dof in (31, 40, 60, 120, 1000):
        assert t_critical_975(dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), abs=1e-4)


# ---- file-level guarantees ------------------------------------------------------------------


def test_old_schema_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        migrations.apply_migrations(con, 0, 1)
        con.execute(
            "INSERT INTO runs VALUES (1, ?, 'm', 'd', 't', 'base', 'complete', 1, 1, ['q'], "
            "'{}', '{}', now()::TIMESTAMP, NULL, NULL, NULL)",
            [run_id_for("old")],
        )
        con.execute("INSERT INTO samples VALUES (1, 0, 2.0, 3, 4, 'i', '', 'o')")
        con.execute(
            "INSERT INTO statistics (run_no, sample_index, layer, projection, nuclear_norm) "
            "VALUES (1, 0, 0, 'q', 5.0)"
        )
    cache = ResultsCache(path, lock_timeout=5)
    [info] = cache.runs()  # reading upgrades
    assert info.samples_done == 1
    with duckdb.connect(str(path), read_only=True) as con:
        version = con.execute(
            "SELECT value FROM layerscope_meta WHERE key = 'schema_version'"
        ).fetchone()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert version == (str(SCHEMA_VERSION),)
    assert {"spectra", "cosine_sums", "sample_fields"} <= tables
    assert cache.curves([info.id], "nuclear_norm")[0].mean == [5.0]
    assert cache.layer_cosines(info.id, "q") == []
    assert cache.sample_fields(info.id) == {}


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    newer = tmp_path / "newer.duckdb"
    ResultsCache(newer).upgrade()
    with duckdb.connect(str(newer)) as con:
        con.execute("UPDATE layerscope_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="version 99, newer than"):
        ResultsCache(newer).runs()
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE x (a INTEGER)")
    with pytest.raises(SchemaVersionError, match="not a layerscope cache"):
        ResultsCache(foreign).runs()
    text = tmp_path / "notes.duckdb"
    text.write_text("hello, not a database\n" * 100)
    with pytest.raises(CacheError, match=str(text)):
        ResultsCache(text).runs()


def _sqlite_file(path):
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE runs (id TEXT)")
    con.close()


@pytest.mark.parametrize(
    ("name", "make", "said"),
    [
        ("results.sqlite", _sqlite_file, "a SQLite database"),
        ("results.csv", lambda p: p.write_text("run,value\n1,2\n"), "a CSV file"),
        ("stats.jsonl", lambda p: p.write_text('{"a": 1}\n'), "a JSON lines file"),
        ("table.parquet", lambda p: p.write_bytes(b"PAR1" + bytes(64)), "a Parquet file"),
        ("notes", lambda p: p.write_text("hello\n"), "a text file"),
        ("blob.bin", lambda p: p.write_bytes(bytes(range(256)) * 4), "a file of another format"),
        ("pipe", os.mkfifo, "a FIFO"),
        ("empty.duckdb", lambda p: p.write_bytes(b""), "is an empty file"),
    ],
)
def test_only_duckdb_files_are_opened(tmp_path, name, make, said):
    """What is not a DuckDB file is never handed to DuckDB (which would load an extension for
    SQLite, open a CSV path as an empty database in memory, and block on a FIFO), for reading
    and for writing, and is left as it was."""
    path = tmp_path / name
    make(path)
    before = None if name == "pipe" else path.read_bytes()
    cache = ResultsCache(path, lock_timeout=1)
    for attempt in (cache.runs, cache.upgrade, lambda: fill_run(cache, "r", 2)):
        with pytest.raises(CacheError) as caught:
            attempt()
        assert str(caught.value).startswith(str(path)) and said in str(caught.value)
    assert before is None or path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no log, nothing beside it


def test_every_connection_is_offline(cache, tmp_path):
    """No connection may install or load an extension on its own (it would download it)."""
    fill_run(cache, "r", 2)
    settings = "SELECT current_setting('autoinstall_known_extensions'), " + (
        "current_setting('autoload_known_extensions')"
    )
    for write in (False, True):
        with cache._file.connection(write=write) as con:
            assert con.execute(settings).fetchone() == (False, False)
    new = CacheFile(tmp_path / "new.duckdb", 1)
    with new.connection(write=True) as con:
        assert con.execute(settings).fetchone() == (False, False)


@pytest.mark.parametrize("removed", ["folder", "file"])
def test_a_cache_removed_while_a_run_writes_is_not_created_again(tmp_path, removed):
    folder = tmp_path / "study"
    path = folder / "results.duckdb"
    cache = ResultsCache(path, lock_timeout=1)
    run_id = fill_run(cache, "r", 4, finish=None)
    if removed == "folder":
        shutil.rmtree(folder)
        said = f"the folder {folder} disappeared while {path} in it was being written"
    else:
        path.unlink()
        said = f"{path} disappeared while it was being written"
    samples = make_samples(6)
    with pytest.raises(CacheError) as caught:
        cache.write_batch(run_id, batch([make_result(4), make_result(5)]), samples)
    assert str(caught.value).startswith(said), caught.value
    assert "no new cache is created" in str(caught.value)
    with pytest.raises(CacheError, match="disappeared"):
        cache.finish_run(run_id, "failed", "stopped")
    assert folder.exists() == (removed == "file")
    assert not path.exists()
    # A new run begun afterwards creates a new cache (with its tables) as any first write does.
    fill_run(cache, "again", 2)
    assert [info.samples_done for info in cache.runs()] == [2]


def test_a_lock_held_too_long_names_the_holder(tmp_path):
    path = tmp_path / "locked.duckdb"
    ResultsCache(path).upgrade()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                con = duckdb.connect({str(path)!r})
                print("locked", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CacheLockedError, match=f"PID {holder.pid}") as caught:
            ResultsCache(path, lock_timeout=0.3).runs()
        assert caught.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert ResultsCache(path, lock_timeout=0.3).runs() == []


def test_a_writer_waits_while_the_holder_works_and_not_while_it_idles(tmp_path):
    """A long import holds the cache for one transaction: a compute that gave up after its
    lock timeout (reading its plan or storing a batch) lost its run. An open keeps waiting
    while the holder gains CPU time (here a holder that works for three of the writer's timeouts, then lets go), and
    stops waiting after one timeout when the holder idles (a shell left open on the file)."""
    path = tmp_path / "busy.duckdb"
    ResultsCache(path).upgrade()
    timeout = 1.0
    holder_code = textwrap.dedent(
        f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        con.begin()
        print("locked", flush=True)
        if sys.argv[1] == "works":
            while time.process_time() < {3 * timeout}:
                pass  # the import's inserts
            con.commit()
            con.close()
            print("done", flush=True)
        sys.stdin.read()
        """
    )
    for kind in ("works", "idles"):
        holder = subprocess.Popen(
            [sys.executable, "-c", holder_code, kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            writer = ResultsCache(path, lock_timeout=timeout)
            if kind == "works":
                writer.begin_run(small_header("waited"))  # waits for the holder's commit
                assert holder.stdout.readline().strip() == "done"
                assert writer.run(run_id_for("waited")).status == "running"
            else:
                with pytest.raises(CacheLockedError, match=f"PID {holder.pid}"):
                    writer.begin_run(small_header("gave up"))
        finally:
            holder.kill()
            holder.wait()


def test_per_sample_values_are_each_stored_value_with_nan_where_not_finite(cache):
    """The paired tests read each sample's values by layer: every stored value in its place,
    NaN for a value stored as infinite or NaN, only the projections asked for, and the
    response-length filter applied (checked against the stored rows, read one by one)."""
    run_id = run_id_for("none_cot")
    cache.begin_run(dataclasses.replace(small_header("none_cot"), targets=targets(4)))
    odd = {
        (1, "q"): {"nuclear_norm": math.inf},
        (2, "k"): {"nuclear_norm": math.nan},
        (0, "v"): {"nuclear_norm": -math.inf},
    }
    results = [make_result(i, overrides=odd if i in (3, 5) else None) for i in range(8)]
    cache.write_batch(run_id, batch(results), make_samples(8))
    values = cache.sample_values(run_id, "nuclear_norm", ["q", "k", "v"])
    assert list(values) == ["q", "k", "v"]
    for projection, by_sample in values.items():
        assert sorted(by_sample) == list(range(8))
        for index, by_layer in by_sample.items():
            assert len(by_layer) == 4
            for layer, value in enumerate(by_layer):
                if index in (3, 5) and (layer, projection) in odd:
                    assert math.isnan(value)
                else:
                    assert value == nuclear(index, layer, projection)
    # response tokens are 20 + index: the samples 2 to 4
    short = cache.sample_values(run_id, "nuclear_norm", ["o"], response_tokens=(22, 24))
    assert list(short) == ["o"] and sorted(short["o"]) == [2, 3, 4]
    assert short["o"][4] == [nuclear(4, layer, "o") for layer in range(4)]
