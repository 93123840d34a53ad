"""The command line as a user runs it: every command, its output, and its error paths (one
line on stderr, a non-zero exit status, never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import duckdb
import pytest
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)

from layerscope.analysis.cache import ResultsCache
from layerscope.app import cli


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, expected_status, *fragments):
    assert status == expected_status
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerscope: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def computed(tmp_path_factory, model_folder):  # noqa: F811
    """A cache with two runs (correct and irrelevant none_cot) of a small paper-layout set."""
    root = tmp_path_factory.mktemp("cli")
    write_dataset(root / "toy", 5, "toy_no_cot")
    write_dataset(root / "toy_wrong_answer_shuffle", 5, "toy_no_cot")
    db = root / "c.duckdb"
    status = cli.main(
        ["compute", "--model", str(model_folder), "--dataset", str(root / "toy"),
         "--batch-size", "2", "--max-length", "64", "--db", str(db), "--quiet"]
    )  # fmt: skip
    assert status == 0
    return db


def test_compute_prints_run_ids_and_runs_lists_them(capsys, computed, model_folder):  # noqa: F811
    status, out, err = run(capsys, "runs", "--json", "--db", computed)
    assert status == 0
    runs = json.loads(out)
    assert [r["type"] for r in runs] == ["none_cot", "none_cot_irrelevant"]
    for record in runs:
        for key in ("id", "model", "dataset", "type", "status", "samples"):
            assert key in record
        assert (record["dataset"], record["status"], record["samples"]) == ("toy", "complete", 5)
    # computing again prints the same ids and computes nothing
    status, out, err = run(
        capsys, "compute", "--model", model_folder, "--dataset", computed.parent / "toy",
        "--batch-size", "2", "--max-length", "64", "--db", computed, "--quiet",
    )  # fmt: skip
    assert status == 0
    assert out.split() == [r["id"] for r in runs]
    assert "cached" in err
    status, out, _ = run(capsys, "--db", computed, "runs")  # --db before the command
    assert status == 0 and "none_cot_irrelevant" in out and "5/5" in out


def test_show_draws_curves_and_tables(capsys, computed):
    ids = [r.id for r in ResultsCache(computed).runs()]
    status, out, err = run(
        capsys, "show", ids[0][:10], ids[1][:10], "--proj", "q,o", "--db", computed, "--width", "70"
    )
    assert status == 0, err
    assert "nuclear_norm · q" in out and "nuclear_norm · o" in out
    assert "MAD of nuclear_norm" in out and "relative difference" in out
    assert "none_cot_irrelevant" in out
    status, out, err = run(
        capsys, "show", ids[0], "--metric", "sigma1_ratio", "--json", "--db", computed
    )
    record = json.loads(out)
    assert record["metric"] == "sigma1_ratio"
    assert [c["projection"] for c in record["curves"]] == ["q", "k", "v", "o"]
    assert record["curves"][0]["count"] == [5, 5, 5]
    assert set(record["mad"][0]) == {"run_id", "projection", "all", "early", "middle", "late"}
    status, out, _ = run(capsys, "show", ids[0], "--metric", "loss", "--db", computed)
    assert status == 0 and "loss over samples" in out
    status, out, _ = run(capsys, "show", ids[0], "--tokens", "0-5", "--db", computed)
    assert status == 1


@pytest.fixture(scope="module")
def answered_twice(tmp_path_factory, model_folder):  # noqa: F811
    """Correct and irrelevant (rotated) answers to the same 6 questions, in two files."""
    root = tmp_path_factory.mktemp("paired")
    correct = json.loads(write_dataset(root / "toy", 6, "toy_no_cot").read_text())
    outputs = [record["output"] for record in correct]
    irrelevant = [
        {**record, "output": outputs[(i + 3) % len(outputs)]} for i, record in enumerate(correct)
    ]
    shuffled = root / "toy_wrong_answer_shuffle"
    shuffled.mkdir()
    (shuffled / "toy_no_cot.json").write_text(json.dumps(irrelevant))
    db = root / "p.duckdb"
    status = cli.main(
        ["compute", "--model", str(model_folder), "--dataset", str(root / "toy"),
         "--batch-size", "3", "--max-length", "64", "--db", str(db), "--quiet"]
    )  # fmt: skip
    assert status == 0
    return db


def test_show_says_whether_runs_differ_with_the_paired_tests(capsys, answered_twice):
    """Correct and irrelevant responses to the same questions: paired tests, as scipy's on the
    stored per-sample values, in the JSON, the table and the marks under each chart."""
    from scipy import stats

    db = answered_twice
    cache = ResultsCache(db)
    a, b = (r.id for r in cache.runs())
    status, out, err = run(capsys, "show", a, b, "--proj", "v", "--json", "--db", db)
    assert status == 0, err
    [record] = json.loads(out)["significance"]
    assert (record["a"], record["b"], record["projection"]) == (a, b, "v")
    assert record["test"] == "paired t"
    assert record["pairing"] == "paired: same questions, 6 shared samples"
    assert record["permutation"] == "exact, all 2^6 sign patterns"
    values_a = [cache.sample_curve(a, i, "nuclear_norm", "v") for i in range(6)]
    values_b = [cache.sample_curve(b, i, "nuclear_norm", "v") for i in range(6)]
    reference = stats.ttest_rel(values_b, values_a, axis=0)
    q = stats.false_discovery_control(reference.pvalue)
    assert [layer["p"] for layer in record["layers"]] == pytest.approx(list(reference.pvalue))
    assert [layer["q"] for layer in record["layers"]] == pytest.approx(list(q))
    differing = [k for k, value in enumerate(q) if value < 0.05]
    assert record["differing_layers"] == differing
    status, out, err = run(capsys, "show", a, b, "--proj", "v", "--db", db)
    assert status == 0, err
    assert "is b different from a?" in out
    assert "none_cot_irrelevant vs none_cot: paired t (paired: same questions" in out
    if differing:
        mark = f"* none_cot_irrelevant differs from none_cot (q < 0.05) at layers {differing[0]}"
    else:
        mark = "  none_cot_irrelevant does not differ from none_cot at any layer (q < 0.05)"
    assert mark in out


def test_show_finds_no_difference_between_identical_runs(capsys, computed):
    """The toy set's irrelevant file holds the same records as the correct one."""
    a, b = (r.id for r in ResultsCache(computed).runs())
    status, out, err = run(capsys, "show", a, b, "--json", "--db", computed)
    assert status == 0, err
    records = json.loads(out)["significance"]
    assert [r["projection"] for r in records] == ["q", "k", "v", "o"]
    for record in records:
        assert record["pairing"] == "paired: same data file, 5 shared samples"
        assert record["verdict"] == "no layer differs (paired t, BH q < 0.05)"
        assert all(layer["p"] == 1.0 for layer in record["layers"])


def test_export_and_import_round_trip(capsys, computed, tmp_path):
    run_id = ResultsCache(computed).runs()[0].id
    db = tmp_path / "copy.duckdb"
    db.write_bytes(computed.read_bytes())
    for fmt, name in (("parquet", "s.parquet"), ("csv", "s.csv"), ("paper-jsonl", "s.jsonl")):
        status, _, err = run(
            capsys, "export", run_id[:8], "--format", fmt, "--output", tmp_path / name, "--db", db
        )
        assert status == 0, err
        assert f"to {tmp_path / name}" in err
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 's.parquet'}'").fetchall() == [(60,)]
    status, out, err = run(
        capsys, "import", tmp_path / "s.jsonl", "--model", "paper-model", "--dataset", "toy",
        "--type", "none_cot", "--db", db,
    )  # fmt: skip
    assert status == 0, err
    imported = out.strip()
    status, out, _ = run(capsys, "show", run_id, imported, "--json", "--db", db)
    record = json.loads(out)
    [a, b] = [c["mean"] for c in record["curves"] if c["projection"] == "k"]
    assert a == pytest.approx(b, rel=1e-12)
    assert all(row["value"] == pytest.approx(0, abs=1e-9) for row in record["relative_differences"])


def test_describe_lists_targets(capsys, model_folder):  # noqa: F811
    status, out, _ = run(capsys, "describe", "--model", model_folder, "--json")
    assert status == 0
    targets = json.loads(out)
    assert len(targets) == 12
    assert targets[0] == {
        "layer": 0,
        "projection": "q",
        "parameter": "model.layers.0.self_attn.q_proj.weight",
        "rows": 32,
        "cols": 32,
    }
    status, out, _ = run(capsys, "describe", "--model", model_folder, "--modules", "mlp")
    assert status == 0 and "model.layers.2.mlp.down_proj.weight" in out


def test_describe_explains_the_routes_at_given_lengths(capsys, model_folder):  # noqa: F811
    status, out, _ = run(capsys, "describe", "--model", model_folder, "--routes", "8,200")
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 2 * 4  # q, k, v, o at each length
    assert lines[0].startswith("T=8 ") and "spectrum factors" in lines[0]
    # 200 positions on 32-wide matrices: no low rank left, the spectrum is by the formed matrix
    assert all("spectrum formed" in line for line in lines[4:])
    assert all(("cheaper" in line) for line in lines)
    status, _, err = run(capsys, "describe", "--model", model_folder, "--routes", "8,x")
    assert status == 2 and "--routes" in err and len(err.strip().splitlines()) == 1


def test_check_profiles_a_model(capsys, tmp_path, model_folder):  # noqa: F811
    status, out, err = run(
        capsys, "check", model_folder, "--limit", "2", "--proj", "q", "--max-length", "512",
        "--db", tmp_path / "c.duckdb", "--quiet", "--width", "70",
    )  # fmt: skip
    assert status == 0, err
    assert "nuclear_norm by layer" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1]}
    for label in ("none_cot", "detailed_cot", "none_cot_irrelevant", "detailed_cot_irrelevant"):
        assert label in rows  # a row of the profile's table
    pairs = [line.split()[:3] for line in out.splitlines() if " vs " in line][1:]  # header
    assert pairs == [
        ["detailed_cot", "vs", "none_cot"],
        ["none_cot_irrelevant", "vs", "none_cot"],
        ["detailed_cot_irrelevant", "vs", "detailed_cot"],
    ]
    status, out, err = run(
        capsys, "check", model_folder, "--limit", "2", "--json", "--max-length", "512",
        "--db", tmp_path / "c.duckdb", "--quiet",
    )  # fmt: skip
    pairs = {(r["a_label"], r["b_label"]) for r in json.loads(out)["relative_differences"]}
    assert pairs == {
        ("none_cot", "detailed_cot"),
        ("none_cot", "none_cot_irrelevant"),
        ("detailed_cot", "detailed_cot_irrelevant"),
    }
    # the profile draws one statistic: cosines and the entries' mean/max/min are not computed
    cache = ResultsCache(tmp_path / "c.duckdb")
    for info in cache.runs():
        assert info.settings["cosines"] is False and info.settings["entry_statistics"] is False
        assert not cache.layer_cosines(info.id, "q")
    # unless the profile shows an entry statistic
    status, out, err = run(
        capsys, "check", model_folder, "--limit", "2", "--metric", "max", "--proj", "q",
        "--max-length", "512", "--db", tmp_path / "c.duckdb", "--quiet",
    )  # fmt: skip
    assert status == 0, err
    assert "max by layer" in out


# ---- errors ---------------------------------------------------------------------------------


def test_missing_model(capsys, tmp_path):
    data = write_dataset(tmp_path / "d", 2)
    status, _, err = run(
        capsys, "compute", "--model", tmp_path / "no-model", "--dataset", data,
        "--db", tmp_path / "c.duckdb",
    )  # fmt: skip
    assert_one_line_error(status, err, 1, "no-model")
    status, _, err = run(capsys, "describe", "--model", tmp_path / "no-model")
    assert_one_line_error(status, err, 1, "no-model")


def test_malformed_data_line(capsys, tmp_path, model_folder):  # noqa: F811
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    status, _, err = run(
        capsys, "compute", "--model", model_folder, "--dataset", data, "--db", tmp_path / "c.duckdb"
    )
    assert_one_line_error(status, err, 1, f"{data}:2")


def test_empty_dataset(capsys, tmp_path, model_folder):  # noqa: F811
    data = tmp_path / "empty.json"
    data.write_text("[]")
    status, _, err = run(
        capsys, "compute", "--model", model_folder, "--dataset", data, "--db", tmp_path / "c.duckdb"
    )
    assert_one_line_error(status, err, 1, str(data), "no samples")


def test_malformed_import_line(capsys, tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text('{"loss": 1.0}\n')
    status, _, err = run(
        capsys, "import", path, "--model", "m", "--dataset", "d", "--type", "t",
        "--db", tmp_path / "c.duckdb",
    )  # fmt: skip
    assert_one_line_error(status, err, 1, f"{path}:1", "no gradient statistics")


def test_unknown_run(capsys, computed):
    for argv in (
        ("show", "ffffffff"),
        ("export", "abc123", "--format", "csv", "--output", "x.csv"),
    ):
        status, _, err = run(capsys, *argv, "--db", computed)
        assert_one_line_error(status, err, 1, "unknown run")


def test_locked_database(capsys, tmp_path, monkeypatch):
    db = tmp_path / "locked.duckdb"
    ResultsCache(db).upgrade()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("LAYERSCOPE_LOCK_TIMEOUT", "0.3")
        status, _, err = run(capsys, "runs", "--db", db)
        assert_one_line_error(status, err, 1, "is locked", f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["show", "abc", "--metric", "bogus"], "unknown metric 'bogus'"),
        (["show", "abc", "--proj", "q,x"], "unknown projection 'x'"),
        (["compute", "--model", "tiny"], "--dataset"),
        (["compute", "--model", "tiny", "--dataset", "math", "--limit", "0"], "--limit"),
        (
            ["compute", "--model", "tiny", "--dataset", "math", "--cpu-threads", "0"],
            "--cpu-threads",
        ),
        (["check", "tiny", "--cpu-threads", "0"], "--cpu-threads: must be at least 1"),
        (["export", "abc", "--format", "xml", "--output", "x"], "invalid choice"),
        (["show", "abc", "--tokens", "9-1"], "empty token range"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path, argv, fragment):
    status, _, err = run(capsys, *argv, "--db", tmp_path / "c.duckdb")
    assert_one_line_error(status, err, 2, fragment)


def test_no_command_opens_the_explorer(monkeypatch, tmp_path):
    import layerscope.app.tui as tui

    calls = []
    monkeypatch.setattr(tui, "run_tui", lambda **kwargs: calls.append(kwargs) or 0)
    assert cli.main(["--model", "tiny", "--dataset", "math", "--db", str(tmp_path / "x")]) == 0
    assert calls == [{"model": "tiny", "dataset": "math", "db": str(tmp_path / "x")}]


def test_an_explorer_that_stopped_on_an_error_exits_non_zero(monkeypatch):
    """Textual prints the error and sets the app's return code to 1: the process says so too
    (it used to exit 0 after a crash)."""
    import layerscope.app.tui as tui
    from layerscope.app.tui import app as app_module

    class Crashed:
        def __init__(self, **kwargs):
            self.return_code = None

        def run(self):
            self.return_code = 1

    monkeypatch.setattr(app_module, "LayerscopeApp", Crashed)
    assert app_module.run_tui() == 1
    monkeypatch.setattr(tui, "run_tui", app_module.run_tui)
    assert cli.main([]) == 1


def test_browsing_never_imports_torch(computed, tmp_path):
    run_id = ResultsCache(computed).runs()[0].id
    db = tmp_path / "copy.duckdb"
    db.write_bytes(computed.read_bytes())
    script = textwrap.dedent(f"""
        import sys
        from layerscope.app.cli import main
        statuses = [
            main(["runs", "--db", {str(db)!r}]),
            main(["show", {run_id!r}, "--db", {str(db)!r}]),
            main(["export", {run_id!r}, "--format", "paper-jsonl",
                  "--output", {str(tmp_path / "x.jsonl")!r}, "--db", {str(db)!r}]),
            main(["import", {str(tmp_path / "x.jsonl")!r}, "--model", "m", "--dataset", "d",
                  "--type", "t", "--db", {str(db)!r}]),
        ]
        print("RESULT", statuses, "torch" in sys.modules, "transformers" in sys.modules)
    """)
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    ).stdout
    assert output.strip().splitlines()[-1] == "RESULT [0, 0, 0, 0] False False"


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "layerscope.app", "runs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "--json" in result.stdout


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("compute", "finished batches are stored"),
        ("export", "nothing was changed"),
        ("import", "nothing was imported"),
    ],
)
def test_an_interrupt_says_what_was_kept(capsys, monkeypatch, tmp_path, command, said):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    argv = {
        "compute": ["compute", "--model", "tiny", "--dataset", "math"],
        "export": ["export", "abc", "--format", "csv", "--output", "x.csv"],
        "import": ["import", "x.jsonl", "--model", "m", "--dataset", "d", "--type", "t"],
    }[command]
    status, _, err = run(capsys, *argv, "--db", tmp_path / "c.duckdb")
    assert_one_line_error(status, err, 130, said)


def test_the_explorers_exit_status_is_the_commands(monkeypatch, tmp_path):
    """`layerscope` with no command opens the explorer; when it stopped on an error, the shell
    sees a failure (a crash must not exit 0)."""
    import layerscope.app.tui.app as explorer

    opened = []

    def stopped_on_an_error(**kwargs):
        opened.append(kwargs)
        return 1

    monkeypatch.setattr(explorer, "run_tui", stopped_on_an_error)
    assert cli.main(["--db", str(tmp_path / "c.duckdb")]) == 1
    assert opened and opened[0]["db"] == str(tmp_path / "c.duckdb")


FINISH = """
import atexit, sys, threading, weakref
atexit.register(lambda: print("atexit ran", flush=True))
class Folder: pass
held = Folder()
weakref.finalize(held, print, "finalizer ran")  # as a device map's offload folder is removed
class Teardown:
    def __del__(self):
        print("torn down", flush=True)  # by the interpreter's teardown of this module
kept = Teardown()
{setup}
from layerscope.app.cli.exits import finish
print("said", end="")  # unflushed: finish flushes it
finish(7)
"""


@pytest.mark.parametrize(
    ("setup", "fast"),
    [
        ("import torch", True),
        ("", False),  # a browsing command: an ordinary exit
        ("import torch; threading.Thread(target=lambda: __import__('time').sleep(1)).start()",
         False),  # a thread still runs: it is waited for
    ],
)  # fmt: skip
def test_the_process_ends_with_its_status_its_output_and_its_exit_handlers(setup, fast):
    """After a computation the process ends without the interpreter's teardown of torch and
    transformers (about 1.2 s of the 2 s a quit took after a compute); what must still happen
    does: the status, every byte of output, atexit handlers and weakref finalizers."""
    code = FINISH.format(setup=setup)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout.startswith("said")
    assert "atexit ran" in result.stdout and "finalizer ran" in result.stdout
    assert ("torn down" in result.stdout) is not fast, result.stdout


def test_the_layerscope_command_ends_through_finish():
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["layerscope"] == "layerscope.app.cli:run"
    assert cli.run.__module__ == "layerscope.app.cli"
