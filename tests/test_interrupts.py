"""Ctrl-C at any moment of a command: one line on stderr, exit status 130, never a traceback.

The moments before a command runs (importing DuckDB, Rich and the settings, parsing) are hit
through the command line's test hook, LAYERSCOPE_TEST_INTERRUPT=import|parse|run, which sends
SIGINT to the process at that point; DuckDB's own word for a Ctrl-C during a query comes from a
real query interrupted the way a terminal does it.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading

import duckdb
import pytest
from tui_synthetic import add_run

from layerscope.analysis.cache import CacheError
from layerscope.app import cli

# The two ways the command starts: what the `layerscope` console script runs (a file whose
# code is this line), and `python -m layerscope.app` (how the explorer starts `compute`).
ENTRIES = {
    "script": ["-c", "import sys; from layerscope.app.cli import main; sys.exit(main())"],
    "python -m": ["-m", "layerscope.app"],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    db = tmp_path_factory.mktemp("interrupts") / "c.duckdb"
    return db, add_run(db, "none_cot")


def command_line(command, db, run_id, folder):
    words = {
        "runs": ["runs"],
        "export": ["export", run_id, "--format", "csv", "--output", str(folder / "x.csv")],
        "doctor": ["doctor"],
        "import": ["import", str(folder / "x.jsonl"), "--model", "m", "--dataset", "d"],
    }[command]
    return [*words, *(["--type", "t"] if command == "import" else []), "--db", str(db)]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    ("phase", "command", "said"),
    [
        ("import", "runs", "nothing was changed"),
        ("parse", "runs", "nothing was changed"),
        ("run", "runs", "nothing was changed"),
        ("run", "export", "nothing was changed"),
        ("run", "doctor", "nothing was changed"),
        ("run", "import", "nothing was imported"),
    ],
)
def test_ctrl_c_at_any_moment_is_one_line_and_status_130(
    cache, tmp_path, entry, phase, command, said
):
    db, run_id = cache
    result = subprocess.run(
        [sys.executable, *ENTRIES[entry], *command_line(command, db, run_id, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, cli.TEST_INTERRUPT: phase},
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines() == [f"layerscope: error: interrupted; {said}"]
    assert result.stdout == ""
    assert not (tmp_path / "x.csv").exists()


def test_a_command_that_ignores_ctrl_c_still_ignores_it_while_importing(cache):
    """Started with SIGINT ignored (`layerscope runs &` in a script, nohup), as it was asked."""
    db, run_id = cache
    result = subprocess.run(
        [sys.executable, "-m", "layerscope.app", "runs", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, cli.TEST_INTERRUPT: "import"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stderr
    assert run_id[:12] in result.stdout


def in_main_thread():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")


def test_ctrl_c_while_importing_waits_for_the_imports_then_interrupts():
    """Held: DuckDB's extension aborts the process on an exception while it initialises."""
    in_main_thread()
    after = []
    with pytest.raises(KeyboardInterrupt), cli._interrupts_held():
        signal.raise_signal(signal.SIGINT)
        after.append("the import went on")
    assert after == ["the import went on"]
    with pytest.raises(KeyboardInterrupt), cli._interrupts_held():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # a second Ctrl-C does not wait
        after.append("not reached")
    assert after == ["the import went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def interrupted_query() -> BaseException:
    """What a long DuckDB query raises when Ctrl-C is pressed while it runs: SIGINT as a
    terminal sends it, pressed again and again from another thread until the query has ended
    (Python's handler raises once, and only once the query is under way)."""
    in_main_thread()
    con = duckdb.connect(config={"threads": 1})
    running = threading.Event()
    ended = threading.Event()
    pressed = []

    def once(signum, _frame):
        if running.is_set() and not pressed:
            pressed.append(signum)
            raise KeyboardInterrupt

    def press():
        while not ended.is_set():
            _thread.interrupt_main()
            ended.wait(0.01)

    previous = signal.signal(signal.SIGINT, once)
    presser = threading.Thread(target=press)
    try:
        presser.start()
        running.set()
        con.execute("SELECT count(*) FROM range(1000000000000) a").fetchall()
    except BaseException as error:
        return error
    finally:
        ended.set()
        presser.join()
        signal.signal(signal.SIGINT, previous)
        con.close()
    raise AssertionError("the query ended without the interrupt")


def test_duckdbs_word_for_a_ctrl_c_during_a_query_is_an_interrupt(capsys, monkeypatch):
    def importing(_args):
        error = interrupted_query()
        # as the cache's connections wrap DuckDB's errors
        try:
            raise error
        except BaseException as raised:
            raise CacheError(f"c.duckdb: {raised}") from None

    monkeypatch.setitem(cli.COMMANDS, "import", importing)
    status = cli.main(["import", "x.jsonl", "--model", "m", "--dataset", "d", "--type", "t"])
    _, err = capsys.readouterr()
    assert status == 130
    assert err.splitlines() == ["layerscope: error: interrupted; nothing was imported"]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("Query interrupted"),  # DuckDB's Python client, Ctrl-C during a query
        duckdb.InterruptException("INTERRUPT Error: Interrupted!"),  # connection.interrupt()
    ],
)
@pytest.mark.parametrize("wrapped", [False, True])
def test_an_interrupted_query_exits_130_raw_or_wrapped_by_the_cache(
    capsys, monkeypatch, error, wrapped
):
    def failing(_args):
        if not wrapped:
            raise error
        try:
            raise error
        except Exception as raised:
            raise CacheError(f"c.duckdb: {raised}") from None

    monkeypatch.setitem(cli.COMMANDS, "export", failing)
    status = cli.main(["export", "abc", "--format", "csv", "--output", "x.csv"])
    _, err = capsys.readouterr()
    assert status == 130
    assert err.splitlines() == ["layerscope: error: interrupted; nothing was changed"]


def test_an_import_that_a_ctrl_c_broke_is_an_interrupt(capsys, monkeypatch):
    """A KeyboardInterrupt inside an extension's initialisation comes out as an ImportError."""

    def failing(_args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("Encountered an error while initializing the extension.") from (
                interrupt
            )

    monkeypatch.setitem(cli.COMMANDS, "export", failing)
    status = cli.main(["export", "abc", "--format", "csv", "--output", "x.csv"])
    assert status == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("Query failed"), 70), (CacheError("c.duckdb: locked"), 1)],
)
def test_other_query_errors_keep_their_status(capsys, monkeypatch, error, status):
    def failing(_args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "export", failing)
    assert cli.main(["export", "abc", "--format", "csv", "--output", "x.csv"]) == status
    assert "interrupted" not in capsys.readouterr().err
