"""Faults of the disk under the cache, and runs stopped with all their samples stored.

A disk that refuses a write (full, over quota, read-only, failing) stops a computation at once:
no sample is retried or recorded as failed for it, the run stays resumable, the command says in
one line what is wrong and where, and the same command resumes once there is room. A run whose
samples are all stored is complete, however late the signal that stopped it came. The faults
are injected by monkeypatching the cache's writer; no test waits for time to pass.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

import duckdb
import pytest
from cache_helpers import batch, make_result, make_samples, run_id_for, small_header
from test_runner import (  # noqa: F401 (fixture)
    EngineSpy,
    model_folder,
    request_for,
    write_dataset,
)

from layerscope.analysis.cache import CacheError, ResultsCache, StorageError, storage_errno
from layerscope.analysis.cache import writes as cache_writes
from layerscope.analysis.compute import engine
from layerscope.analysis.models import loading
from layerscope.analysis.runs.lifecycle import MARKED_COMPLETE, StoredRun, complete_if_stored
from layerscope.analysis.runs.runner import execute
from layerscope.app import cli

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


def disk_full(path: Path) -> CacheError:
    """What the cache raises when DuckDB cannot write: its one line, the OSError behind it."""
    error = CacheError(f'{path}: IO Error: Could not write file "{path}.wal": {FULL}')
    error.__cause__ = OSError(errno.ENOSPC, FULL)
    return error


def refuse_writes(monkeypatch, db: Path, after: int = 1) -> list[int]:
    """The cache's batch writer stores ``after`` batches, then raises what a full disk under
    ``db`` makes it raise; returns the calls' numbers."""
    real = cache_writes.store_batch
    calls: list[int] = []

    def store_batch(con, run_no, batch, samples_by_index, failed=()):
        calls.append(len(calls) + 1)
        if len(calls) > after:
            raise disk_full(db)
        return real(con, run_no, batch, samples_by_index, failed)

    monkeypatch.setattr(cache_writes, "store_batch", store_batch)
    return calls


# ---- telling a refusal of the disk ------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, FULL),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        OSError(errno.EROFS, os.strerror(errno.EROFS)),
        CacheError(f"/x/c.duckdb: IO Error: Could not write file: {FULL}"),
        CacheError(
            "/x/c.duckdb: FATAL Error: Failed to create checkpoint because of error: Could "
            f'not write file "/x/c.duckdb": {FULL}'
        ),
        duckdb.IOException(f"Could not write file: {FULL}"),
    ],
)
def test_a_refusal_of_the_disk_is_told_by_errno_or_by_its_words(error):
    assert storage_errno(error) is not None
    wrapped = CacheError("/x/c.duckdb: something went wrong")
    wrapped.__cause__ = error
    assert storage_errno(wrapped) == storage_errno(error)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOENT, "No such file or directory"),
        CacheError("/x/c.duckdb: Catalog Error: Table with name runs does not exist"),
        RuntimeError("boom"),
    ],
)
def test_other_errors_are_no_refusal_of_the_disk(error):
    assert storage_errno(error) is None


def test_the_cache_says_a_full_disk_and_its_folder(tmp_path, monkeypatch):
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    run = StoredRun(cache, small_header("full"))
    with run:
        run.write(batch([make_result(0, 2)]), make_samples(1))
        refuse_writes(monkeypatch, cache.path, after=0)
        with pytest.raises(StorageError) as refused:
            cache.write_batch(run.run_id, batch([make_result(1, 2)]), make_samples(2))
        monkeypatch.undo()
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.folder == tmp_path.absolute()
    assert str(refused.value).startswith(f"the disk is full: cannot write to {tmp_path}")
    assert FULL in str(refused.value)


# ---- the lifecycle ---------------------------------------------------------------------------


def test_a_full_disk_leaves_the_run_cancelled_and_resumable(tmp_path, monkeypatch):
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    run = StoredRun(cache, small_header("full"))
    with pytest.raises(StorageError) as refused, run:
        run.write(batch([make_result(0, 2)]), make_samples(1))
        refuse_writes(monkeypatch, cache.path, after=0)
        run.write(batch([make_result(1, 2)]), make_samples(2))
    assert "run the same command to resume" in str(refused.value)
    info = cache.run(run.run_id)
    assert (info.status, info.samples_done, info.samples_failed) == ("cancelled", 1, 0)
    assert info.provenance["message"].startswith("the disk is full: cannot write to")


def test_a_disk_that_refuses_even_the_status_leaves_the_run_running(tmp_path, monkeypatch):
    """Nothing can be written: the run stays as begun (running under this process, which
    `runs` shows as interrupted once the process has ended), and the refusal is what is said."""
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    run = StoredRun(cache, small_header("full"))
    with pytest.raises(StorageError, match="the disk is full"), run:
        run.write(batch([make_result(0, 2)]), make_samples(1))
        refuse_writes(monkeypatch, cache.path, after=0)

        def refused(*args, **kwargs):
            raise StorageError(errno.ENOSPC, tmp_path)

        monkeypatch.setattr(cache, "finish_run", refused)
        run.write(batch([make_result(1, 2)]), make_samples(2))
    assert run.status == "running"
    assert cache.run(run.run_id).status == "running"


def test_a_cancel_that_stopped_nothing_completes_the_run(tmp_path):
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    cancel = threading.Event()
    run = StoredRun(cache, small_header("late"), cancel, expected=[0, 1])
    with run:
        run.write(batch([make_result(0, 2), make_result(1, 2)]), make_samples(2))
        cancel.set()  # during or after the last batch
    assert (run.status, cache.run(run.run_id).status) == ("complete", "complete")

    early = StoredRun(cache, small_header("early"), cancel, expected=[0, 1])
    with early:
        early.write(batch([make_result(0, 2)]), make_samples(1))
    assert (early.status, cache.run(early.run_id).status) == ("cancelled", "cancelled")


@pytest.mark.parametrize("left", ["cancelled", "failed"])
def test_a_run_left_unfinished_with_every_sample_stored_is_marked_complete(tmp_path, left):
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    run = StoredRun(cache, small_header(left))
    with run:
        run.write(batch([make_result(0, 2), make_result(1, 2)]), make_samples(2))
    cache.finish_run(run.run_id, left, "RuntimeError: boom" if left == "failed" else "")
    sessions = cache.run(run.run_id).provenance["sessions"]
    assert complete_if_stored(cache, run.run_id) is not None
    info = cache.run(run.run_id)
    assert info.status == "complete"
    assert info.provenance["completed"]["was"] == left
    assert "message" not in info.provenance
    assert info.provenance["sessions"] == sessions  # each session as it ended
    assert complete_if_stored(cache, run.run_id) is None  # nothing more to do
    assert complete_if_stored(cache, run_id_for("no such run")) is None


def test_a_run_being_computed_is_not_marked_complete(tmp_path):
    cache = ResultsCache(tmp_path / "c.duckdb", lock_timeout=5)
    run = StoredRun(cache, small_header("live"))
    with run:
        run.write(batch([make_result(0, 2)]), make_samples(1))
        assert complete_if_stored(cache, run.run_id) is None  # this live process owns it
        assert cache.run(run.run_id).status == "running"


# ---- the runner ------------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    return write_dataset(tmp_path / "data", 6)


def stored_rows(db: Path) -> tuple[int, int, list[tuple]]:
    """Samples stored, failure records, and every statistics row in a stable order."""
    with duckdb.connect(str(db), read_only=True) as con:
        samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        failed = con.execute("SELECT count(*) FROM skipped WHERE kind = 'failed'").fetchone()[0]
        rows = con.execute(
            "SELECT * EXCLUDE (run_no) FROM statistics ORDER BY sample_index, layer, projection"
        ).fetchall()
    return samples, failed, rows


def test_a_full_disk_stops_the_runner_at_once_then_the_same_request_resumes(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,
    monkeypatch,
):
    db = tmp_path / "c.duckdb"
    request = request_for(model_folder, data_file)  # 6 samples, batches of 2
    with monkeypatch.context() as patch:
        spy = EngineSpy(patch)
        calls = refuse_writes(patch, db, after=1)
        seen = []
        with pytest.raises(StorageError) as refused:
            for update in execute(request, db):
                seen.append(update)
    assert refused.value.folder == tmp_path.absolute()
    assert len(calls) == 2  # the second batch's write, once: no sample was retried alone
    assert spy.seen == [0, 1, 2, 3, 4, 5]  # one chunk, never a sample alone
    assert not any(u.failed or u.message for u in seen)
    info = ResultsCache(db).runs()[0]
    assert (info.status, info.samples_done, info.samples_failed) == ("cancelled", 2, 0)
    samples, failed, _rows = stored_rows(db)
    assert (samples, failed) == (2, 0)
    kept = ResultsCache(db).done_indices(info.id)  # the first batch (by length, not index)

    spy = EngineSpy(monkeypatch)
    updates = list(execute(request, db))
    assert updates[-1].status == "complete"
    assert sorted(spy.seen) == sorted(set(range(6)) - kept)  # only what was missing
    reference = tmp_path / "reference.duckdb"
    list(execute(request, reference))
    assert stored_rows(db) == stored_rows(reference)


def test_a_full_disk_inside_the_computation_is_no_sample_failure(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,
    monkeypatch,
):
    """The error the tester saw: the disk's refusal raised while computing was retried sample
    by sample and stored as each sample's failure."""
    db = tmp_path / "c.duckdb"
    tried: list[list[int]] = []

    def refusing(loaded, samples, settings, cancel=None):
        tried.append([s.index for s in samples])
        raise disk_full(db)
        yield  # a generator, as the engine's

    monkeypatch.setattr(engine, "compute_statistics", refusing)
    with pytest.raises(StorageError, match="the disk is full"):
        list(execute(request_for(model_folder, data_file), db))
    assert tried == [[0, 1, 2, 3, 4, 5]]
    info = ResultsCache(db).runs()[0]
    assert (info.status, info.samples_done, info.samples_failed) == ("cancelled", 0, 0)


def test_a_cancel_during_the_last_batch_completes_the_run(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,
    monkeypatch,
):
    db = tmp_path / "c.duckdb"
    cancel = threading.Event()
    real = ResultsCache.write_batch
    written = []

    def write_then_cancel(self, *args, **kwargs):
        new = real(self, *args, **kwargs)
        written.append(new)
        if len(written) == 3:  # the last of 3 batches is stored
            cancel.set()
        return new

    monkeypatch.setattr(ResultsCache, "write_batch", write_then_cancel)
    updates = list(execute(request_for(model_folder, data_file), db, cancel))
    assert (updates[-1].status, updates[-1].done, updates[-1].total) == ("complete", 6, 6)
    assert ResultsCache(db).runs()[0].status == "complete"


def test_a_cancel_during_a_batch_stores_that_batch_and_starts_no_other(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,
    monkeypatch,
):
    """What Ctrl-C and SIGTERM say ("stopping once the batch in flight is stored") is so."""
    db = tmp_path / "c.duckdb"
    cancel = threading.Event()
    real = engine._fast_batch
    passes: list[list[int]] = []

    def cancelled_during_the_second(loaded, targets, encoded, settings, timer):
        passes.append([e.index for e in encoded])
        if len(passes) == 2:
            cancel.set()  # as the signal handler does, while this batch computes
        return real(loaded, targets, encoded, settings, timer)

    monkeypatch.setattr(engine, "_fast_batch", cancelled_during_the_second)
    updates = list(execute(request_for(model_folder, data_file), db, cancel))
    assert len(passes) == 2
    assert (updates[-1].status, updates[-1].done) == ("cancelled", 4)
    cache = ResultsCache(db)
    info = cache.runs()[0]
    assert (info.status, info.samples_done) == ("cancelled", 4)
    assert cache.done_indices(info.id) == {i for p in passes for i in p}


def test_a_cached_run_left_cancelled_is_marked_complete(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,
    monkeypatch,
):
    db = tmp_path / "c.duckdb"
    request = request_for(model_folder, data_file)
    list(execute(request, db))
    cache = ResultsCache(db)
    run_id = cache.runs()[0].id
    cache.finish_run(run_id, "cancelled")  # as a signal after the last batch used to leave it

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded when everything is cached")

    monkeypatch.setattr(loading, "load_model", no_loading)
    updates = list(execute(request, db))
    assert [(u.status, u.message) for u in updates] == [("cached", MARKED_COMPLETE)]
    assert cache.run(run_id).status == "complete"
    assert [u.message for u in execute(request, db)] == [""]  # once


# ---- the command line (the built-in tiny model) ----------------------------------------------

TINY = ["compute", "--model", "tiny", "--dataset", "math", "--types", "none_cot"]
TINY += ["--limit", "6", "--batch-size", "2", "--quiet"]


def test_compute_on_a_full_disk_says_so_in_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    db = tmp_path / "cache" / "c.duckdb"
    db.parent.mkdir()
    with monkeypatch.context() as patch:
        calls = refuse_writes(patch, db, after=1)
        status = cli.main([*TINY, "--db", str(db)])
    _out, err = capsys.readouterr()
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        f"layerscope: error: the disk is full: cannot write to {db.parent.absolute()} ({FULL}); "
    )
    assert "run the same command to resume" in lines[0]
    assert len(calls) == 2
    assert stored_rows(db)[:2] == (2, 0)  # the first batch kept, no failure recorded
    assert cli.main(["runs", "--json", "--db", str(db)]) == 0
    listed = capsys.readouterr().out
    assert '"status": "cancelled"' in listed and '"failed": 0' in listed

    assert cli.main([*TINY, "--db", str(db)]) == 0
    capsys.readouterr()
    reference = tmp_path / "reference.duckdb"
    assert cli.main([*TINY, "--db", str(reference)]) == 0
    run_id = capsys.readouterr().out.split()[0]
    exported = []
    for cache in (db, reference):
        csv = tmp_path / f"{cache.stem}.csv"
        argv = ["export", run_id, "--format", "csv", "--output", str(csv), "--db", str(cache)]
        assert cli.main(argv) == 0
        exported.append(csv.read_text())
    assert exported[0] == exported[1]
    assert ResultsCache(db).run(run_id).status == "complete"


def sigterm_after(monkeypatch, batches: int) -> None:
    """SIGTERM to this process once ``batches`` batches are stored, as a scheduler sends it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the command handles signals only in the main thread")
    real = ResultsCache.write_batch
    written = []

    def write_then_signal(self, *args, **kwargs):
        new = real(self, *args, **kwargs)
        written.append(new)
        if len(written) == batches:
            os.kill(os.getpid(), signal.SIGTERM)  # handled in this (the main) thread
        return new

    monkeypatch.setattr(ResultsCache, "write_batch", write_then_signal)


def test_sigterm_right_after_the_last_batch_leaves_the_run_complete(tmp_path, capsys, monkeypatch):
    db = tmp_path / "c.duckdb"
    sigterm_after(monkeypatch, 3)  # 6 samples, batches of 2
    status = cli.main([*TINY, "--db", str(db)])
    _out, err = capsys.readouterr()
    assert "stopping once the batch in flight is stored" in err
    assert "cancelled" not in err
    assert status == 0  # nothing was left to do
    info = ResultsCache(db).runs()[0]
    assert (info.status, info.samples_done) == ("complete", 6)


def test_sigterm_mid_run_stores_the_batch_in_flight_and_exits_143(tmp_path, capsys, monkeypatch):
    db = tmp_path / "c.duckdb"
    sigterm_after(monkeypatch, 1)
    status = cli.main([*TINY, "--db", str(db)])
    _out, err = capsys.readouterr()
    assert status == 128 + signal.SIGTERM
    assert "run the same command to resume" in err
    info = ResultsCache(db).runs()[0]
    assert (info.status, info.samples_done) == ("cancelled", 2)
    monkeypatch.undo()
    assert cli.main([*TINY, "--db", str(db)]) == 0
    assert ResultsCache(db).run(info.id).status == "complete"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_model_loads_stops_at_once(tmp_path, capsys, monkeypatch, signum):
    """Before the first batch nothing is in flight and nothing would be lost: Ctrl-C or SIGTERM
    while the weights load (minutes on a large checkpoint) stops the command at once, with the
    signal's exit status, instead of saying it will stop "once the batch in flight is stored"
    and loading on."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the command handles signals only in the main thread")
    from transformers import AutoModelForCausalLM

    finished: list[bool] = []

    def slow_load(*_args, **_kwargs):
        os.kill(os.getpid(), signum)  # handled in this (the main) thread, here
        # a load that takes minutes: the signal must end it (the handler raises in this loop)
        for _ in range(6000):
            threading.Event().wait(0.01)
        finished.append(True)
        raise AssertionError("the signal did not stop the load")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", slow_load)
    db = tmp_path / "c.duckdb"
    status = cli.main([*TINY, "--db", str(db)])
    _out, err = capsys.readouterr()
    assert status == 128 + signum and not finished
    assert "stopping once the batch in flight" not in err
    assert err.strip().splitlines()[-1].startswith("layerscope: error: interrupted;")
    assert all(info.samples_done == 0 for info in ResultsCache(db).runs())


def test_sigterm_while_a_batch_computes_stores_that_batch(tmp_path, capsys, monkeypatch):
    """The message says the batch in flight is stored: a SIGTERM that lands while the second
    batch is being computed (not between batches) leaves that batch stored, 4 of 6."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the command handles signals only in the main thread")
    real = engine._fast_batch_splitting
    calls: list[int] = []

    def signalled_mid_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled here, before the batch is computed
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_fast_batch_splitting", signalled_mid_batch)
    db = tmp_path / "c.duckdb"
    status = cli.main([*TINY, "--db", str(db)])
    _out, err = capsys.readouterr()
    assert status == 128 + signal.SIGTERM
    assert "stopping once the batch in flight is stored" in err
    info = ResultsCache(db).runs()[0]
    assert (info.status, info.samples_done) == ("cancelled", 4)
