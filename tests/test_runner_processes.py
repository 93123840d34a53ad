"""Two real processes on one cache: a `layerscope compute` killed with SIGKILL mid-run while
another process reads, then resumed. Every sample must be stored exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)

from layerscope.analysis.cache import ResultsCache

pytestmark = pytest.mark.slow

SAMPLES = 150  # enough that the writer is still running while a reader process starts
MATRICES = 3 * 4  # the test Llama: 3 layers x q, k, v, o
PAUSED_AT = 2  # the killed writer waits here until the reader process is started
HELD_AT = 16  # and is held after this many stored batches (tests/writer_probe)
KILLED_SAMPLES = HELD_AT + 8  # a few left for the resumed process to compute
WRITER_PROBE = Path(__file__).parent / "writer_probe"


def compute_command(model, data, db):
    return [
        sys.executable,
        "-m",
        "layerscope.app",
        "compute",
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--batch-size",
        "1",  # a transaction per sample: the writer is still running when a reader starts
        "--max-length",
        "64",
        "--db",
        str(db),
        "--quiet",
    ]


def assert_stored_once(db, run_id, expected_samples=None):
    with duckdb.connect(str(db), read_only=True) as con:
        run_no = con.execute("SELECT run_no FROM runs WHERE id = ?", [run_id]).fetchone()[0]
        samples, distinct = con.execute(
            "SELECT count(*), count(DISTINCT sample_index) FROM samples WHERE run_no = ?",
            [run_no],
        ).fetchone()
        rows, distinct_rows, sampled = con.execute(
            "SELECT count(*), count(DISTINCT (sample_index, layer, projection)), "
            "count(DISTINCT sample_index) FROM statistics WHERE run_no = ?",
            [run_no],
        ).fetchone()
        sums = con.execute(
            "SELECT min(samples), max(samples) FROM curve_sums WHERE run_no = ? "
            "AND statistic = 'nuclear_norm'",
            [run_no],
        ).fetchone()
    assert samples == distinct  # no sample twice
    assert rows == distinct_rows == samples * MATRICES  # no partial batch, no duplicate row
    assert sampled == samples
    assert sums == (samples, samples)  # the per-run sums match the rows
    if expected_samples is not None:
        assert samples == expected_samples
    return samples


def held_env(after, pause_at, pause_file):
    """The environment of a writer that waits for ``pause_file`` once it has stored
    ``pause_at`` batches and blocks once it has stored ``after``, until it is killed: still
    running whatever the machine's speed, so few samples are needed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(WRITER_PROBE), env.get("PYTHONPATH", "")])
    env["LAYERSCOPE_HOLD_AFTER"] = str(after)
    env["LAYERSCOPE_PAUSE_AT"] = str(pause_at)
    env["LAYERSCOPE_PAUSE_FILE"] = str(pause_file)
    return env


def test_sigkill_mid_run_with_a_concurrent_reader_then_resume(tmp_path, model_folder):  # noqa: F811
    data = write_dataset(tmp_path / "data", KILLED_SAMPLES)
    db = tmp_path / "c.duckdb"
    command = compute_command(model_folder, data, db)
    go_on = tmp_path / "go-on"
    writer = subprocess.Popen(
        command,
        env=held_env(HELD_AT, PAUSED_AT, go_on),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cache = ResultsCache(db, lock_timeout=20)
    observed: list[int] = []
    other_reader = None
    deadline = time.monotonic() + 180
    try:
        while True:
            assert time.monotonic() < deadline, "compute made no progress"
            assert writer.poll() is None, f"compute ended early: {writer.stderr.read()}"
            runs = cache.runs()
            done = runs[0].samples_done if runs else 0
            if not observed or done != observed[-1]:
                observed.append(done)
            if done >= PAUSED_AT and other_reader is None:
                # a second reader process, as `layerscope runs` in another terminal
                # started, not waited for: this process keeps polling while it runs
                other_reader = subprocess.Popen(
                    [sys.executable, "-m", "layerscope.app", "runs", "--json", "--db", str(db)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                go_on.touch()  # the writer, paused at PAUSED_AT (seen here), goes on
            if done >= HELD_AT and other_reader is not None and other_reader.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    # the readers saw samples land while the writer was running
    assert len([n for n in observed if n > 0]) >= 2, observed
    assert other_reader is not None
    reader_out, reader_err = other_reader.communicate(timeout=60)
    assert other_reader.returncode == 0, reader_err
    [listed] = json.loads(reader_out)
    assert listed["status"] == "running" and 0 < listed["samples"] < KILLED_SAMPLES

    info = cache.runs()[0]
    assert info.status == "cancelled"  # its process is gone
    killed_at = assert_stored_once(db, info.id)
    assert killed_at == HELD_AT  # killed while held: every batch it committed is there

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == [info.id]
    info = cache.run(info.id)
    assert (info.status, info.samples_done, info.samples_total) == (
        "complete",
        KILLED_SAMPLES,
        KILLED_SAMPLES,
    )
    assert_stored_once(db, info.id, KILLED_SAMPLES)
    assert len(info.provenance["sessions"]) == 2


def test_sigterm_stores_the_batch_in_flight_and_exits_143(tmp_path, model_folder):  # noqa: F811
    """SIGTERM (what a batch scheduler sends) stops cleanly like Ctrl-C, with the shell's
    status for it: 128 + 15."""
    data = write_dataset(tmp_path / "data", SAMPLES)
    db = tmp_path / "c.duckdb"
    writer = subprocess.Popen(
        compute_command(model_folder, data, db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cache = ResultsCache(db, lock_timeout=20)
    deadline = time.monotonic() + 180
    try:
        while not (runs := cache.runs()) or runs[0].samples_done < 2:
            assert time.monotonic() < deadline, "compute made no progress"
            assert writer.poll() is None, f"compute ended early: {writer.stderr.read()}"
            time.sleep(0.05)
        writer.send_signal(signal.SIGTERM)
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 128 + signal.SIGTERM, err
    assert "stopping once the batch in flight is stored" in err
    info = cache.runs()[0]
    assert info.status == "cancelled"
    assert out.split() == [info.id]
    assert 2 <= assert_stored_once(db, info.id) < SAMPLES
