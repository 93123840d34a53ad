"""Is a run being computed right now? Told by a lock its compute holds, not by a stored PID.

A compute killed in one container left its PID in the cache; in the next container an
unrelated process had that PID, and the run could never be resumed while doctor called the
cache healthy. Here real processes begin runs, are killed with SIGKILL, and unrelated live
processes hold the stored PID: a run is live exactly while the process computing it lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from cache_helpers import ended, fill_run, run_id_for

from layerscope.analysis.cache import CacheError, ResultsCache, liveness
from layerscope.app import cli

TESTS = Path(__file__).resolve().parent

# a compute that began its run and stored 8 of its 12 samples, then waits (to be killed)
_BEGUN = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from cache_helpers import fill_run
from layerscope.analysis.cache import ResultsCache
cache = ResultsCache(sys.argv[1])
fill_run(cache, "live", 8, finish=None)
print("stored", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "results.duckdb"


def began_elsewhere(db: Path) -> subprocess.Popen[str]:
    """A process computing run "live" into ``db`` (8 samples stored), alive until killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", _BEGUN, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "stored"
    return child


def runs_json(capsys: pytest.CaptureFixture[str], db: Path) -> dict[str, dict]:
    capsys.readouterr()
    assert cli.main(["runs", "--json", "--db", str(db)]) == 0
    return {run["id"]: run for run in json.loads(capsys.readouterr().out)}


def test_a_run_is_live_while_its_process_lives_and_resumes_once_it_is_killed(db, capsys):
    run_id = run_id_for("live")
    child = began_elsewhere(db)
    try:
        info = ResultsCache(db).run(run_id)
        assert (info.status, info.interrupted, info.samples_done) == ("running", False, 8)
        with pytest.raises(CacheError, match=f"being computed by PID {child.pid} right now"):
            fill_run(ResultsCache(db), "live", 12)
        assert liveness.run_claim(db, run_id) is liveness.Claim.HELD
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the kernel let go of its lock with the process: interrupted at once, and resumable
    assert runs_json(capsys, db)[run_id]["interrupted"] is True
    fill_run(ResultsCache(db), "live", 12)
    info = ResultsCache(db).run(run_id)
    assert (info.status, info.samples_done) == ("complete", 12)
    assert liveness.run_claim(db, run_id) is liveness.Claim.FREE  # finished: let go of


def test_a_live_process_that_reuses_the_stored_pid_does_not_hold_the_run(db, capsys):
    """The issue's container case: the stored PID now names an unrelated live process on the
    same host (here the test's parent). No lock is held, so the run is interrupted: ``runs``
    says so, doctor calls it interrupted (not "being computed"), and the same command
    resumes it."""
    run_id = fill_run(ResultsCache(db), "reused", 12, finish=None)
    ended(db, run_id)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [os.getppid(), run_id])
    assert runs_json(capsys, db)[run_id]["interrupted"] is True
    assert cli.main(["doctor", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "interrupted: 12 of 12 samples stored" in out and "being computed" not in out
    fill_run(ResultsCache(db), "reused", 12)
    assert ResultsCache(db).run(run_id).status == "complete"


def test_two_processes_never_compute_one_run(db):
    """The second compute of a run refuses while the first lives, whichever PID is stored."""
    run_id = run_id_for("live")
    first = began_elsewhere(db)
    try:
        second = subprocess.run(
            [sys.executable, "-c", _BEGUN, str(db)],
            input="",
            capture_output=True,
            text=True,
            check=False,
        )
        assert second.returncode != 0
        assert f"run {run_id[:12]} is being computed by PID {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_without_locks_the_stored_pid_decides(db, monkeypatch):
    """Where record locks cannot be had (no fcntl), a run whose stored PID is a live process
    on this host is taken as computed, as before the locks."""
    monkeypatch.setattr(liveness, "fcntl", None)
    run_id = fill_run(ResultsCache(db), "pid", 4, finish=None)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [os.getppid(), run_id])
    assert ResultsCache(db).run(run_id).status == "running"
    with pytest.raises(CacheError, match=f"being computed by PID {os.getppid()}"):
        fill_run(ResultsCache(db), "pid", 4)


def test_doctor_repair_makes_a_claim_by_pid_alone_stop_counting(db, tmp_path, capsys):
    """A cache that never had a lock file (computed by a layerscope before the locks) can only
    be judged by its stored PIDs, and one an unrelated process has now reads as live. Doctor
    says whose PID it is; ``--repair`` creates the lock file, after which the run is
    interrupted (no process holds it) and resumes."""
    run_id = fill_run(ResultsCache(db), "old", 12, finish=None)
    ended(db, run_id)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", [os.getppid(), run_id])
    old = tmp_path / "old" / "results.duckdb"  # the same file where no lock file ever was
    old.parent.mkdir()
    old.write_bytes(db.read_bytes())
    assert cli.main(["doctor", "--db", str(old)]) == 0
    assert f"being computed by PID {os.getppid()} right now" in capsys.readouterr().out
    assert cli.main(["doctor", "--repair", "--db", str(old)]) == 1  # the run: interrupted
    out = capsys.readouterr().out
    assert f"created {old.name}.live beside the cache" in out
    assert "interrupted: 12 of 12 samples stored; the same command resumes" in out
    fill_run(ResultsCache(old), "old", 12)
    assert ResultsCache(old).run(run_id).status == "complete"
    assert cli.main(["doctor", "--repair", "--db", str(old)]) == 0
    assert ".live" not in capsys.readouterr().out  # created once
