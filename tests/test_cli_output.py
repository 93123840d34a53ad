"""What the command line prints where a user reads it: tables at 80 columns, charts without
colour, stdout kept to what ``--help`` promises, and the stages of loading a model."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import textwrap

import pytest
from test_runner import model_folder, write_dataset  # noqa: F401 (fixture)
from tui_synthetic import add_run

from layerscope.analysis.cache import ResultsCache
from layerscope.app import cli
from layerscope.app.charts import Series, render_curves
from layerscope.app.palettes import SERIES_MARKERS


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# ---- tables at 80 columns ---------------------------------------------------------------------


@pytest.fixture
def two_types(tmp_path):
    """A cache of two runs whose types differ only at their end, one with a long dataset name."""
    db = tmp_path / "c.duckdb"
    ids = [
        add_run(db, "none_cot", dataset="knowledge_with_a_long_dataset_name"),
        add_run(db, "none_cot_irrelevant", dataset="knowledge_with_a_long_dataset_name"),
    ]
    return db, ids


def test_runs_at_80_columns_shows_whole_ids_and_types(capsys, monkeypatch, two_types):
    db, ids = two_types
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = run(capsys, "runs", "--db", db)
    assert status == 0, err
    # every line fits, but the title's cache path, which is never cut (a temporary path under
    # pytest-xdist is longer than 80 columns with its words)
    assert max(len(line) for line in out.splitlines() if str(db) not in line) <= 80
    assert "…" not in out
    shown = re.findall(r"^\s*([0-9a-f]{12})\s", out, re.MULTILINE)
    assert shown == [run_id[:12] for run_id in ids]
    rows = [line for line in out.splitlines() if re.match(r"^\s*[0-9a-f]{12}\s", line)]
    assert re.search(r"\snone_cot\s", rows[0]) and re.search(r"\snone_cot_irrelevant\s", rows[1])
    for short_id in shown:  # the ids as printed are what `show` accepts
        status, out, err = run(capsys, "show", short_id, "--json", "--db", db)
        assert status == 0, err


def test_show_tables_at_80_columns_keep_run_labels_whole(capsys, monkeypatch, two_types):
    db, ids = two_types
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = run(capsys, "show", ids[0], ids[1], "--proj", "q", "--db", db)
    assert status == 0, err
    tables = out[out.index("MAD of") :]
    assert max(len(line) for line in tables.splitlines()) <= 80
    assert "…" not in tables
    assert re.search(r"\snone_cot_irrelevant\s", tables)


# A response type of 62 characters: no table of the runs fits 80 columns with it whole.
LONG_TYPE = "detailed_cot_with_irrelevant_context_and_a_long_descriptive_nm"


@pytest.fixture
def long_type(tmp_path):
    db = tmp_path / "c.duckdb"
    ids = [add_run(db, LONG_TYPE), add_run(db, "none_cot")]
    return db, ids


@pytest.mark.parametrize("columns", [200, 80, 40, 10])
def test_runs_never_cut_an_id_or_a_type_at_any_width(capsys, monkeypatch, long_type, columns):
    db, ids = long_type
    assert len(LONG_TYPE) == 62
    monkeypatch.setenv("COLUMNS", str(columns))
    status, out, err = run(capsys, "runs", "--db", db)
    assert status == 0, err
    words = out.split()
    assert [word for word in words if re.fullmatch(r"[0-9a-f]{12}", word)] == [
        run_id[:12] for run_id in ids
    ]
    assert LONG_TYPE in words and "none_cot" in words
    assert "…" not in out
    if columns >= 40:  # wider than the terminal, for it to wrap: what cannot be cut alone
        wide = [line for line in out.splitlines() if len(line) > columns]
        assert all(LONG_TYPE in line or line == str(db) for line in wide), wide
    for short_id in re.findall(r"\b[0-9a-f]{12}\b", out):  # as printed, what `show` accepts
        status, _, err = run(capsys, "show", short_id, "--json", "--db", db)
        assert status == 0, err


def test_runs_too_wide_for_a_table_are_written_one_record_each(capsys, monkeypatch, long_type):
    db, ids = long_type
    monkeypatch.setenv("COLUMNS", "40")
    status, out, err = run(capsys, "runs", "--db", db)
    assert status == 0, err
    records = [block.splitlines() for block in out.strip().split("\n\n")[1:]]
    assert [record[0].split() for record in records] == [["id", i[:12]] for i in ids]
    assert [record[3].split() for record in records] == [
        ["type", LONG_TYPE],
        ["type", "none_cot"],
    ]
    assert [line.split()[0] for line in records[0]] == [
        "id", "model", "dataset", "type", "mode", "status", "samples", "layers", "started"
    ]  # fmt: skip


@pytest.mark.parametrize("columns", [80, 40, 10])
def test_show_never_cuts_a_run_label_at_any_width(capsys, monkeypatch, long_type, columns):
    db, ids = long_type
    monkeypatch.setenv("COLUMNS", str(columns))
    status, out, err = run(capsys, "show", ids[0], ids[1], "--proj", "q", "--db", db)
    assert status == 0, err
    tables = out[out.index("MAD of") :].split()
    # the MAD, relative difference and significance tables, and the notes under them
    assert tables.count(LONG_TYPE) == 3 and f"{LONG_TYPE}:" in tables
    assert "…" not in out


# ---- charts without colour --------------------------------------------------------------------


def legend_markers(chart: str, labels: list[str]) -> list[str]:
    """The glyph pair the legend shows before each label."""
    markers = []
    for label in labels:
        match = re.search(rf"(\S\S) {re.escape(label)}\b", chart)
        assert match, f"no legend entry for {label!r} in\n{chart}"
        markers.append(match.group(1))
    return markers


@pytest.mark.parametrize("color", [False, True])
def test_chart_series_differ_by_glyph_with_or_without_colour(monkeypatch, color):
    monkeypatch.delenv("NO_COLOR", raising=False)
    labels = ["none_cot", "detailed_cot", "none_cot_irrelevant"]
    series = [
        Series(label, [0, 1, 2, 3], [1.0 + 3 * n, 2.0 + 3 * n, 1.5 + 3 * n, 2.5 + 3 * n])
        for n, label in enumerate(labels)
    ]
    chart = render_curves(series, title="q", width=70, height=20, color=color)
    assert ("\x1b[" in chart) == color
    plain = re.sub(r"\x1b\[[0-9;]*m", "", chart)
    markers = legend_markers(plain, labels)
    assert len(set(markers)) == len(labels)
    assert [m[0] for m in markers] == list(SERIES_MARKERS[: len(labels)])
    rows = plain.splitlines()
    plot = "\n".join(row.split("┤", 1)[1] for row in rows if "┤" in row)
    for label, marker in zip(labels, markers, strict=True):
        plot_without_legend = plot.replace(f"{marker} {label}", "")
        assert marker[0] in plot_without_legend, f"{label}'s {marker[0]} is not drawn"
    # every one of 4 layers is a tick, and the axis says what it counts
    ticks = rows[rows.index(next(r for r in rows if "└" in r)) + 1]
    assert ticks.split() == ["0", "1", "2", "3"]
    assert any(row.strip() == "layer" for row in rows)


def test_no_color_turns_colour_off(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    chart = render_curves([Series("a", [0, 1], [1.0, 2.0])], width=40, height=10, color=True)
    assert "\x1b[" not in chart


# ---- computing: stdout, stages, times ---------------------------------------------------------

HEX_ID = re.compile(r"^[0-9a-f]{64}$")


def compute_argv(model, data, db, *extra):
    return ["compute", "--model", model, "--dataset", data, "--limit", "2",
            "--max-length", "64", "--db", db, *extra]  # fmt: skip


def test_compute_log_shows_each_stage_once_then_summaries(capsys, tmp_path, model_folder):  # noqa: F811
    data = write_dataset(tmp_path / "d", 4)
    status, out, err = run(capsys, *compute_argv(model_folder, data, tmp_path / "c.duckdb"))
    assert status == 0, err
    # stdout, redirected: the full run ids, one per line, nothing else
    assert out.splitlines() and all(HEX_ID.match(line) for line in out.splitlines()), out
    lines = err.splitlines()
    begun = [line.split("…")[0] for line in lines if "…" in line]
    # "importing torch and transformers" only where torch is not imported yet (it is here)
    assert begun[-4:-1] == ["loading the tokenizer", "loading weights", "moving the model to cpu"]
    # on a CPU, with the threads it computes on (--cpu-threads)
    assert re.fullmatch(r"computing the first batch on \d+ CPU threads?", begun[-1]), begun
    assert len(begun) == len(set(begun))
    assert any(re.search(r"\(loading weights: \d+ tensors in [\d.]+ s\)", line) for line in lines)
    assert "Loading weights" not in err + out
    [summary] = [line for line in lines if line.startswith(out.split()[0][:12])]
    assert re.search(r"complete 2/2 in [\d.]+ s$", summary), summary
    assert re.match(r"done in [\d.]+ s \(loading [\d.]+ s\)$", lines[-1]), lines[-1]
    # --quiet: no stages
    status, out, err = run(
        capsys, *compute_argv(model_folder, data, tmp_path / "q.duckdb", "--quiet")
    )
    assert status == 0 and "…" not in err and "loading weights" not in err


def test_cached_compute_imports_no_torch_and_says_nothing_was_missing(tmp_path, model_folder):  # noqa: F811
    data = write_dataset(tmp_path / "d", 3)
    db = tmp_path / "c.duckdb"
    assert cli.main([str(a) for a in compute_argv(model_folder, data, db, "--quiet")]) == 0
    ids = [info.id for info in ResultsCache(db).runs()]
    script = textwrap.dedent(f"""
        import sys
        from layerscope.app.cli import main
        status = main({[str(a) for a in compute_argv(model_folder, data, db)]!r})
        print("RESULT", status, "torch" in sys.modules, "transformers" in sys.modules)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    *printed, last = result.stdout.splitlines()
    assert last == "RESULT 0 False False", result.stderr
    assert printed == ids
    assert result.stderr.splitlines()[-1].startswith("the run is cached: nothing to compute")
    assert "…" not in result.stderr  # no loading stage began


def in_a_terminal(argv: list[str], columns: int) -> tuple[str, str]:
    """Run the CLI with stderr a terminal of ``columns`` and stdout a pipe: (what the
    terminal received, stdout)."""
    code = f"import sys; from layerscope.app.cli import main; sys.exit(main({argv!r}))"
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=secondary, env=env
    )
    os.close(secondary)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end is closed: the process has exited
            break
        if not chunk:
            break
        terminal += chunk
    stdout = process.stdout.read().decode()
    assert process.wait(timeout=120) == 0, terminal.decode(errors="replace")
    os.close(primary)
    return terminal.decode(errors="replace"), stdout


def test_compute_in_a_terminal_shows_stages_live_and_no_loader_bar(tmp_path, model_folder):  # noqa: F811
    """stderr a terminal, stdout a pipe: the stages are drawn on the terminal, transformers'
    own "Loading weights" bar never is, and stdout still holds only the ids."""
    data = write_dataset(tmp_path / "d", 2)
    argv = [str(a) for a in compute_argv(model_folder, data, tmp_path / "c.duckdb")]
    screen, stdout = in_a_terminal(argv, 100)
    assert "loading weights" in screen and "Loading weights" not in screen
    assert [len(line) for line in stdout.splitlines()] == [64]
    assert re.search(r"done in [\d.]+ s \(loading [\d.]+ s\)", screen)


def test_check_keeps_stdout_for_the_profile(capsys, tmp_path, model_folder):  # noqa: F811
    status, out, err = run(
        capsys, "check", model_folder, "--limit", "1", "--proj", "q", "--max-length", "512",
        "--db", tmp_path / "c.duckdb", "--width", "70",
    )  # fmt: skip
    assert status == 0, err
    assert "nuclear_norm by layer" in out
    assert "…" not in out and "done in" not in out
    run_lines = [line for line in err.splitlines() if re.match(r"^[0-9a-f]{12}  math/", line)]
    assert len(run_lines) == 4 and all(" in " in line for line in run_lines), err
    assert "loading weights…" in err


def help_text(capsys, command):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_says_what_stdout_carries(capsys):
    text = help_text(capsys, "compute")
    assert "only the full run ids, one per line" in text
    assert "one summary line per run" in text
    assert "standard output carries the profile" in help_text(capsys, "check")


# ---- models that are not ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "describe"])
def test_a_folder_that_is_no_model_is_called_so(capsys, tmp_path, command):
    folder = tmp_path / "cot_500"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    argv = ["check", folder] if command == "check" else ["describe", "--model", folder]
    status, _, err = run(capsys, *argv, "--db", tmp_path / "c.duckdb")
    assert status == 1
    assert err.strip() == (
        f"layerscope: error: {folder}: no config.json, not a Hugging Face model folder"
    )


def test_other_commands_keep_stdout_to_their_data(capsys, tmp_path, two_types, model_folder):  # noqa: F811
    db, ids = two_types
    status, out, err = run(capsys, "describe", "--model", model_folder, "--json")
    assert status == 0 and len(json.loads(out)) == 12
    assert err.strip() == "reading the model's layout (importing torch and transformers)…"
    status, out, err = run(capsys, "runs", "--json", "--db", db)
    assert [record["id"] for record in json.loads(out)] == ids
    status, out, err = run(capsys, "export", ids[0], "--format", "csv", "--output", "-", "--db", db)
    assert (
        status == 0
        and out.startswith("run_id,model,dataset,response_type,mode,sample_index,loss,")
        and "wrote" in err
    )
    assert "wrote" not in out
    status, out, err = run(capsys, "runs", "--db", tmp_path / "empty.duckdb")
    assert status == 0 and out == "" and "no runs in" in err


# ---- one connection per command ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["show", "{a}", "{b}"],
        ["show", "{a}", "{b}", "--json"],
        ["table", "{a}", "{b}"],
    ],
)
def test_a_browsing_command_opens_the_cache_once(capsys, monkeypatch, two_types, command):
    """Opening the file costs about 20 ms of CPU; a command reads the runs, their sums and
    their samples, each read once opened the file again. (A pair's first ``show`` also opens
    it once more, after its reads, to keep the tests: the test runs it once before.)"""
    from layerscope.analysis.cache.connection import CacheFile

    db, ids = two_types
    argv = [part.format(a=ids[0][:12], b=ids[1][:12]) for part in command]
    assert run(capsys, *argv, "--db", db)[0] == 0
    opened = []
    real_open = CacheFile.open

    def counting_open(self, write=False):
        opened.append(write)
        return real_open(self, write)

    monkeypatch.setattr(CacheFile, "open", counting_open)
    status, out, err = run(capsys, *argv, "--db", db)
    assert status == 0, err
    assert out
    assert opened == [False]


def test_a_write_inside_a_reading_session_is_refused(two_types):
    db, _ids = two_types
    cache = ResultsCache(db)
    with cache.session():
        assert cache.runs()
        with pytest.raises(RuntimeError, match="write inside a read-only cache session"):
            cache.checkpoint()
    cache.checkpoint()  # after the session, writes open their own connection again


def test_table_cells_are_printed_as_they_are_not_as_markup(capsys, tmp_path):
    db = tmp_path / "c.duckdb"
    add_run(db, "correct", dataset="[bold]math[/bold]")
    status, out, err = run(capsys, "runs", "--db", db)
    assert status == 0, err
    assert "[bold]math[/bold]" in out


def test_show_keeps_a_pairs_tests_and_the_next_show_reuses_them(capsys, monkeypatch, two_types):
    """A fresh process per command: the tests are kept in the file, not only in memory."""
    from layerscope.analysis.results import pair_significance

    db, ids = two_types
    tested = []
    real_pair_tests = pair_significance.pair_tests

    def counting(*args, **kwargs):
        tested.append(args[1].id)
        return real_pair_tests(*args, **kwargs)

    monkeypatch.setattr(pair_significance, "pair_tests", counting)
    first = run(capsys, "show", ids[0], ids[1], "--json", "--db", db)
    assert first[0] == 0 and tested == [ids[0]]
    pair_significance.SIGNIFICANCE_MEMO.clear()  # as in the next process
    second = run(capsys, "show", ids[0], ids[1], "--json", "--db", db)
    assert second == first and tested == [ids[0]]
    assert json.loads(second[1])["significance"]
    # another statistic is another test
    run(capsys, "show", ids[0], ids[1], "--metric", "sigma1_ratio", "--db", db)
    assert tested == [ids[0], ids[0]]


HOLD_WRITE_LOCK = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])  # read-write: DuckDB locks the file for this process
    print("holding", flush=True)
    time.sleep(120)
""")


def test_keeping_tests_never_waits_for_a_lock_nor_fails(two_types):
    """Another process writing the file (a compute storing batches) leaves the tests unkept,
    at once: a browsing command is not held up by a write it only does for next time."""
    from layerscope.analysis.results.pair_significance import significance_rows

    db, ids = two_types
    cache = ResultsCache(db, lock_timeout=300)
    curves = cache.curves(ids, "nuclear_norm")
    rows = significance_rows(cache, curves, [(ids[0], ids[1])], "nuclear_norm")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        cache.keep_tests(ids[0], ids[1], "settings", "state", rows)
        assert holder.poll() is None  # it returned while the lock was held: it did not wait
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert cache.kept_tests(ids[0], ids[1], "settings", "state") is None
    cache.keep_tests(ids[0], ids[1], "settings", "state", rows)
    assert cache.kept_tests(ids[0], ids[1], "settings", "state") == rows
    assert cache.kept_tests(ids[0], ids[1], "settings", "another state") is None


def test_a_stage_that_cannot_count_does_not_show_the_weights_count():
    """'computing the first batch 0/272' stood for minutes: the weights' count, carried over."""
    from rich.console import Console
    from rich.progress import Progress

    from layerscope.analysis.base.records import LoadStage
    from layerscope.app.cli.progress_bars import StageReport

    progress = Progress(console=Console(file=io.StringIO(), width=80))
    report = StageReport(progress, None)
    report(LoadStage("weights", "loading weights", done=100, total=272))
    report(LoadStage("weights", "loading weights", done=272, total=272))
    report(LoadStage("first batch", "computing the first batch"))
    (task,) = progress.tasks
    assert (task.description, task.total) == ("computing the first batch", None)


def test_the_progress_line_fits_80_columns_with_its_count_rate_eta_and_memory(
    tmp_path,
    model_folder,  # noqa: F811
):
    """At 80 columns the count was cut and Rich's ETA showed '-:--:…': every part whole."""
    data = write_dataset(tmp_path / "d", 6)
    argv = [str(a) for a in compute_argv(model_folder, data, tmp_path / "c.duckdb")]
    argv[argv.index("--limit") + 1] = "6"
    screen, _stdout = in_a_terminal([*argv, "--batch-size", "1"], 80)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)  # colours go, cursor moves split frames
    frames = re.split(r"\r|\x1b\[[0-9;?]*[A-Za-z]", plain)
    lines = [f for f in frames if re.search(r"\b[1-5]/6\b", f) and "ETA" in f]
    assert lines, screen
    line = lines[-1]
    assert len(line.rstrip()) <= 80, line
    assert re.search(r"\b[1-5]/6 +\d+\.\d\d/s \S+ tok/s ETA \S+", line), line
    assert re.search(r"rss \d+\.\d/\d+\.\dG", line), line  # the process's resident memory
