"""Browsing the paper's whole study from one cache: 150,000 samples, before and after.

The paper's study is about 150,000 samples (5 models x 2 modes x 30 response types x 500
samples) of 28-42 layers; a lab keeps it in one cache file and browses it for weeks. This
benchmark builds that cache (300 runs of 500 samples, 30 layers, 4 projections, every default
statistic, per-sample cosines) and times what a user does with it, each in a fresh process as a
user runs it: ``runs``, ``show`` of 2 runs, ``table`` over 10 runs, ``doctor``, and the explorer's
first frame and its chart after Enter on 2 runs (driven by Pilot; the explorer computes the
pair's tests of significance in a process of its own, whose CPU is reported on a row of its
own). It prints the wall time, the CPU time and the peak resident memory of each, for the code
in this checkout and, with ``--baseline REV``, side by side for the code of an older commit
(checked out into a temporary git worktree and imported from there), with the ratio.

    python benchmarks/bench_cache.py --baseline 5acfd73 --keep       # the study, before/after
    python benchmarks/bench_cache.py --runs 30 --keep                # 15,000 samples, quicker
    python benchmarks/bench_cache.py --keep --dir DIR --only-explorer  # a kept file, explorer

How the cache is built, the fastest honest way: one run of 500 samples is written through the
cache's own write path (``ResultsCache.store_complete_run``: the same rows, arrays and sums a
compute stores), then copied run by run in SQL with a new key, model, mode and response type, its
statistics scaled by a per-run factor and jittered per row (so that no two runs are equal and
the tests of significance do real work). Each copy's rows are appended together, as a compute
appends them; the per-layer sums are then rebuilt from the rows (``rebuild_summaries``). Every
version of the code builds its own file (its schema may differ), so the size per sample printed
is that of the layout each version writes. Files are named by schema version and shape under
``--dir`` and reused with ``--keep``.

Pairs: runs of one response type share their data file's digest (the same questions), so
``show`` of two models on one type runs the paired tests (per-sample reads, sign-flip
permutations), the expensive case. ``table`` takes the 10 runs of one model and both modes over
five types.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "gemma-2-9b", "olmo-2-7b")
MODES = ("base", "instruct")
PROJECTIONS = ("q", "k", "v", "o")
# show of a pair whose tests are computed (its first show: the cache keeps them since schema 5)
# and of one whose tests the cache kept (before schema 5, every show computes them)
SHOW_COMPUTED = "show 2 runs, tests computed"
SHOW_KEPT = "show 2 runs, tests kept"
# the explorer's tests of significance, in a process of their own: its CPU, and what the tests'
# computation alone took there (as the process itself counts it)
TESTS_PROCESS = "tests process"
TESTS_COMPUTATION = "tests computation in the tests process"
GOALS = {  # issue 19: CPU seconds (doctor: wall seconds and resident memory)
    "runs": 0.3,
    SHOW_COMPUTED: 0.5,
    SHOW_KEPT: 0.5,
    "table 10 runs": 1.0,
    "explorer chart after Enter": 0.5,
}

# ---- building the cache (runs inside the code version under test) --------------------------

BUILD = textwrap.dedent(
    '''
    import hashlib, json, math, random, sys, time
    from pathlib import Path
    import duckdb
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.cache.schema import SCHEMA_VERSION
    from layerscope.analysis.base.records import (
        MATRIX_STATISTICS, BatchResult, MatrixStatistics, RunHeader, Sample, SampleResult,
        TargetInfo,
    )

    path, runs, samples, layers, seed = Path(sys.argv[1]), *map(int, sys.argv[2:6])
    names = json.loads(sys.argv[6])  # [[model, mode, response_type], ...] per run
    rng = random.Random(seed)
    started = time.perf_counter()

    def run_id(model, mode, response_type):
        text = f"study|{model}|{mode}|{response_type}|{samples}|{layers}"
        return hashlib.sha256(text.encode()).hexdigest()

    def digest(response_type):
        return hashlib.sha256(f"data|{response_type}".encode()).hexdigest()

    def symmetric(size):
        """A cosine matrix as the engine stores it: symmetric, ones on the diagonal."""
        m = [[1.0] * size for _ in range(size)]
        for i in range(size):
            for j in range(i + 1, size):
                m[i][j] = m[j][i] = rng.uniform(-0.2, 0.9)
        return m

    def sample_result(index):
        matrices = []
        for layer in range(layers):
            for p in ("q", "k", "v", "o"):
                scale = (1 + 0.5 * math.sin(layer / 3)) * rng.lognormvariate(0, 0.3)
                values = {name: scale * rng.uniform(0.5, 1.5) for name in MATRIX_STATISTICS}
                values["mean"] = rng.gauss(0, 1e-5)
                values["min"] = -abs(values["min"])
                matrices.append(MatrixStatistics(layer, p, values))
        cosines = {p: symmetric(layers) for p in ("q", "k", "v", "o")}
        pairs = {pair: [rng.uniform(-1, 1) for _ in range(layers)] for pair in ("q-o", "k-v")}
        prompt_tokens = 30 + index % 90
        response_tokens = 20 + (index * 7919) % 900
        return SampleResult(
            index, rng.uniform(0.5, 3), prompt_tokens, response_tokens, matrices, cosines, pairs
        )

    model, mode, response_type = names[0]
    targets = [
        TargetInfo(layer, p, f"model.layers.{layer}.self_attn.{p}_proj.weight", 4096, 4096)
        for layer in range(layers) for p in ("q", "k", "v", "o")
    ]
    settings = {"mode": mode, "max_length": 4096, "modules": "attn", "statistics_version": 1,
                "data_sha256": digest(response_type)}
    header = RunHeader(run_id(model, mode, response_type), model, "study", response_type, mode,
                       samples, targets, settings, {"benchmark": "bench_cache.py"})
    texts = {i: Sample(i, f"question {i}: " + "why " * 40, "because " * 120) for i in range(samples)}

    def batches():
        for first in range(0, samples, 50):
            chunk = [sample_result(i) for i in range(first, min(samples, first + 50))]
            yield BatchResult(chunk, [], first + len(chunk), samples), texts

    cache = ResultsCache(path)
    cache.store_complete_run(header, batches())
    print(f"  seed run written through the cache in {time.perf_counter() - started:.1f} s",
          flush=True)

    started = time.perf_counter()
    with duckdb.connect(str(path)) as con:
        con.execute("SET enable_progress_bar = false")
        tables = [
            t for (t,) in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'run_no' "
                "AND table_name <> 'runs' ORDER BY table_name").fetchall()
        ]
        columns = {
            t: con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index", [t]).fetchall()
            for t in tables
        }
        for number, (model, mode, response_type) in enumerate(names[1:], start=2):
            settings = {**settings, "mode": mode, "data_sha256": digest(response_type)}
            con.begin()
            con.execute(
                "INSERT INTO runs SELECT * REPLACE (? AS run_no, ? AS id, ? AS model, "
                "? AS response_type, ? AS mode, ? AS settings) FROM runs WHERE run_no = 1",
                [number, run_id(model, mode, response_type), model, response_type, mode,
                 json.dumps(settings)],
            )
            factor = 0.7 + 0.6 * rng.random()
            for table in tables:
                scaled = [
                    f'"{name}" * (? * (0.9 + 0.2 * random()))::REAL AS "{name}"'
                    for name, data_type in columns[table]
                    if table == "statistics" and data_type == "FLOAT"
                ]
                replace = ", ".join(["? AS run_no", *scaled])
                con.execute(
                    f"INSERT INTO {table} SELECT * REPLACE ({replace}) FROM {table} "
                    "WHERE run_no = 1",
                    [number, *([factor] * len(scaled))],
                )
            con.commit()
            if number % 25 == 0:
                print(f"  {number}/{len(names)} runs", flush=True)
    cache.rebuild_summaries()
    cache.checkpoint()
    print(f"  copied into {len(names)} runs and sums rebuilt in "
          f"{time.perf_counter() - started:.1f} s (schema version {SCHEMA_VERSION})", flush=True)
    '''
)

# ---- timing one command in a fresh process ----------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, os, resource, runpy, sys, time
    started = time.perf_counter()
    code = 0
    try:
        sys.argv = ["layerscope", *sys.argv[1:]]
        runpy.run_module("layerscope.app", run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.environ["BENCH_REPORT"], "w") as report:
            json.dump({"wall": time.perf_counter() - started,
                       "cpu": usage.ru_utime + usage.ru_stime,
                       "peak_mb": usage.ru_maxrss / 1024, "code": code}, report)
    """
)

EXPLORER = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys, time
    started = time.perf_counter()
    cpu_started = time.process_time()
    from layerscope.app.tui.app import LayerscopeApp
    try:  # the widgets by tab (after issue 20), else the flat folder of older code
        from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
        from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
    except ImportError:
        from layerscope.app.tui.widgets.layer_chart import LayerChart
        from layerscope.app.tui.widgets.runs_browser import RunsBrowser

    wanted = sys.argv[2:4]

    async def until(pilot, condition, what):
        # polled between the app's own steps (pilot.pause waits for the screen to settle,
        # which a worker busy testing delays long after the curves are drawn)
        deadline = time.monotonic() + 600
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"the explorer never showed {what}")
            await asyncio.sleep(0.005)

    async def main():
        app = LayerscopeApp(db=sys.argv[1], poll_seconds=0)
        report = {}
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            report["first frame"] = (time.perf_counter() - started,
                                     time.process_time() - cpu_started)
            await pilot.press("2")
            tree = app.query_one(RunsBrowser)

            def line_of(run_id):
                for line in range(tree.last_line + 1):
                    node = tree.get_node_at_line(line)
                    if node is not None and node.data == run_id:
                        return line
                return None

            await until(
                pilot,
                lambda: all(line_of(run_id) is not None for run_id in wanted),
                "the two runs in its runs list",
            )
            await app.workers.wait_for_complete()
            await pilot.pause()
            chart = app.query_one(LayerChart)
            for position, run_id in enumerate(wanted):
                tree.cursor_line = line_of(run_id)
                await pilot.pause()
                if position == 0:  # the first run marked and drawn alone, then the pair timed
                    await pilot.press("space")
                    await app.workers.wait_for_complete()
                    await pilot.pause()
            # from marking the second run (the pair's reads start there) and Enter to the chart
            enter, enter_cpu = time.perf_counter(), time.process_time()
            await pilot.press("space", "enter")
            await until(pilot, lambda: len({s.label for s in chart.series}) >= 2, "two curves")
            report["chart after Enter"] = (time.perf_counter() - enter,
                                           time.process_time() - enter_cpu)
            await app.workers.wait_for_complete()
            await pilot.pause()
            if not chart.marks:
                raise SystemExit("the pair's tests drew no marks")
            report["tests drawn after Enter"] = (time.perf_counter() - enter,
                                                    time.process_time() - enter_cpu)
            # what the tests' computation took in the process that ran it (the explorer's
            # tests process; none before the tests moved there)
            pool = getattr(app, "significance", None)
            report["tests computation in the tests process"] = getattr(pool, "cpu_seconds", 0.0)
        return report

    report = asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["peak_mb"] = usage.ru_maxrss / 1024
    # The tests process, whole (start-up and imports too): the explorer ends and reaps it when
    # it closes, so its CPU is now the reaped children's. Its wall: while the tests were drawn.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report["tests process"] = (report["tests drawn after Enter"][0],
                               children.ru_utime + children.ru_stime)
    report["tests process peak_mb"] = children.ru_maxrss / 1024
    with open(os.environ["BENCH_REPORT"], "w") as out:
        json.dump(report, out)
    """
)


class Code:
    """One version of layerscope: this checkout, or an older commit in a temporary worktree."""

    def __init__(self, label: str, revision: str | None, scratch: Path) -> None:
        self.label = label
        self.revision = revision
        self.pythonpath: str | None = None
        self.state = scratch / f"explorer-state-{label}.json"  # a fresh explorer each time
        if revision is not None:
            tree = scratch / f"tree-{revision}"
            if not tree.exists():
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(ROOT),
                        "worktree",
                        "add",
                        "-f",
                        "--detach",
                        str(tree),
                        revision,
                    ],
                    check=True,
                    capture_output=True,
                )
            shim = scratch / f"shim-{revision}" / "layerscope"
            shim.mkdir(parents=True, exist_ok=True)
            for folder in ("app", "analysis", "samples"):
                link = shim / folder
                if not link.exists():
                    link.symlink_to(tree / folder)
            self.pythonpath = str(shim.parent)

    def env(self, report: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        if report is not None:
            env["BENCH_REPORT"] = str(report)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["LAYERSCOPE_STATE"] = str(self.state)
        return env

    def python(self, code: str, *args: str, report: Path | None = None) -> None:
        subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env(report), check=True, cwd=ROOT
        )

    def schema_version(self) -> int:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from layerscope.analysis.cache.schema import SCHEMA_VERSION as v; print(v)",
            ],
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
        )
        return int(out.stdout)


def study_names(runs: int) -> list[list[str]]:
    """(model, mode, response type) of each run: types vary fastest, then modes, then models."""
    types = max(1, math.ceil(runs / (len(MODELS) * len(MODES))))
    names = [
        [model, mode, f"type_{t:02d}"] for model in MODELS for mode in MODES for t in range(types)
    ]
    return names[:runs]


def run_id(names: list[str], samples: int, layers: int) -> str:
    model, mode, response_type = names
    text = f"study|{model}|{mode}|{response_type}|{samples}|{layers}"
    return hashlib.sha256(text.encode()).hexdigest()


def build(code: Code, path: Path, runs: int, samples: int, layers: int) -> float:
    started = time.perf_counter()
    partial = path.with_suffix(".building")
    for leftover in (partial, Path(f"{partial}.wal")):
        leftover.unlink(missing_ok=True)
    names = study_names(runs)
    code.python(BUILD, str(partial), str(runs), str(samples), str(layers), "0", json.dumps(names))
    partial.rename(path)
    return time.perf_counter() - started


def measure(code: Code, args: list[str], scratch: Path) -> dict[str, float]:
    report = scratch / "report.json"
    report.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-c", MEASURE, *args],
        env=code.env(report),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    return json.loads(report.read_text())


def explore(code: Code, db: Path, pair: list[str], scratch: Path) -> dict:
    report = scratch / "report.json"
    report.unlink(missing_ok=True)
    code.state.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", EXPLORER, str(db), *pair],
        env=code.env(report),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"explorer run failed ({code.label}):\n{done.stderr[-2000:]}")
    return json.loads(report.read_text())


def printed(code: Code, args: list[str]) -> str:
    """What a command prints (stdout and stderr), run by this version of the code."""
    env = {**code.env(), "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "layerscope.app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def same_output(
    before: Code, after: Code, db: Path, pair: list[str], table_runs: list[str], scratch: Path
) -> dict[str, str]:
    """Whether both versions print the same curves, tables and tests from the same file: the
    baseline's file, copied (the newer code upgrades it in place, after the baseline read it)."""
    copy = scratch / "same-output.duckdb"
    shutil.copyfile(db, copy)
    commands = {
        "show --json (curves, MAD, relative differences, tests)": ["show", "--json", *pair],
        "show (charts and tables)": ["show", *pair],
        "table over 10 runs": ["table", *table_runs],
        "table over 10 runs, 100-300 response tokens": [
            "table",
            *table_runs,
            "--tokens",
            "100-300",
        ],
    }
    outputs = {name: printed(before, [*args, "--db", str(copy)]) for name, args in commands.items()}
    same = {}
    for name, args in commands.items():
        output = printed(after, [*args, "--db", str(copy)])
        same[name] = "identical" if output == outputs[name] else "DIFFERENT"
        if output != outputs[name] and "--json" in args:
            same[name] = json_difference(outputs[name], output)
    copy.unlink()
    Path(f"{copy}.wal").unlink(missing_ok=True)
    return same


def json_difference(before: str, after: str) -> str:
    """How two JSON outputs differ: "DIFFERENT" unless only numbers do, then the worst relative
    difference of each field that differs (the rounding of a formula computed another way)."""
    worst: dict[str, float] = {}

    def walk(a: object, b: object, field: str) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(walk(a[k], b[k], k) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(walk(x, y, field) for x, y in zip(a, b, strict=True))
        if isinstance(a, float) and isinstance(b, float) and a != b:
            if math.isnan(a) or math.isnan(b):
                return math.isnan(a) and math.isnan(b)
            relative = abs(a - b) / max(abs(a), abs(b))
            worst[field] = max(worst.get(field, 0.0), relative)
            return True
        return a == b

    try:
        equal = walk(json.loads(before.split("\n", 1)[1]), json.loads(after.split("\n", 1)[1]), "")
    except ValueError:
        return "DIFFERENT"
    if not equal:
        return "DIFFERENT"
    fields = ", ".join(f"{field} {value:.0e}" for field, value in sorted(worst.items()))
    return f"the same but for rounding (worst relative difference: {fields})"


def forget_kept_tests(db: Path) -> None:
    """Drop the tests of significance a cache keeps (schema 5 on): the next ``show`` of a pair,
    or the explorer's, computes them as the first time does."""
    import duckdb

    with duckdb.connect(str(db)) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if "kept_tests" in tables:
            con.execute("DELETE FROM kept_tests")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs of --samples each (300)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--baseline", metavar="REV", help="also time this commit's code")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-cache")
    parser.add_argument("--keep", action="store_true", help="keep the cache files for reruns")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many (3)")
    parser.add_argument("--no-doctor", action="store_true", help="skip doctor (slow before)")
    parser.add_argument("--no-explorer", action="store_true")
    parser.add_argument(
        "--only-explorer",
        action="store_true",
        help="time the explorer only (not runs, show, table, doctor, nor the same-output check)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args(argv)
    if options.runs < 10:
        parser.error("--runs: at least 10 (table takes 10 runs)")

    options.dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    versions = [Code("after", None, scratch)]
    if options.baseline:
        versions.insert(0, Code("before", options.baseline, scratch))
    total = options.runs * options.samples
    print(
        f"study cache: {options.runs} runs x {options.samples} samples = {total:,} samples, "
        f"{options.layers} layers x 4 projections; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {load_average()}"
    )
    names = study_names(options.runs)
    pair = [run_id(names[0], options.samples, options.layers)]
    same_type_other_model = next(
        (n for n in names if n[0] != names[0][0] and n[1:] == names[0][1:]), names[1]
    )
    pair.append(run_id(same_type_other_model, options.samples, options.layers))
    one_model = [n for n in names if n[0] == names[0][0]]
    table_runs = [
        run_id(n, options.samples, options.layers)
        for n in sorted(one_model, key=lambda n: (n[2], n[1]))[:10]
    ]
    results: dict[str, dict[str, dict[str, float]]] = {}
    files: dict[str, Path] = {}
    same: dict[str, str] = {}
    try:
        for code in versions:
            version = code.schema_version()
            db = options.dir / (
                f"study-v{version}-{options.runs}x{options.samples}x{options.layers}.duckdb"
            )
            if not db.exists():
                print(f"[{code.label}] building {db} ...", flush=True)
                seconds = build(code, db, options.runs, options.samples, options.layers)
                print(f"[{code.label}] built in {seconds:.0f} s", flush=True)
            size = db.stat().st_size
            wal = Path(f"{db}.wal")
            size += wal.stat().st_size if wal.exists() else 0
            row: dict[str, dict[str, float]] = {
                "size per sample (KB)": {"value": size / total / 1e3, "file_gb": size / 1e9}
            }
            show = ["show", "--db", str(db), *pair]
            commands = {
                "runs": ["runs", "--db", str(db)],
                SHOW_COMPUTED: show,
                SHOW_KEPT: show,
                "table 10 runs": ["table", "--db", str(db), *table_runs],
            }
            if not options.no_doctor:
                commands["doctor"] = ["doctor", "--db", str(db)]
            if options.only_explorer:
                commands = {}
            for name, args in commands.items():
                repeats = 1 if name == "doctor" else options.repeats
                samples = []
                for _ in range(repeats):
                    if name == SHOW_COMPUTED:
                        forget_kept_tests(db)
                    samples.append(measure(code, args, scratch))
                if any(s["code"] not in (0, 1) for s in samples):
                    raise SystemExit(f"{code.label}: {name} failed: {samples}")
                row[name] = {
                    key: statistics.median(s[key] for s in samples)
                    for key in ("wall", "cpu", "peak_mb")
                }
                print(f"[{code.label}] {name}: {row[name]}", flush=True)
            if not options.no_explorer:
                runs = []
                for _ in range(options.repeats):
                    forget_kept_tests(db)  # the pair's tests are computed, as the first time
                    runs.append(explore(code, db, pair, scratch))
                # each row the explorer's (UI) process, but "tests process": the process the
                # tests ran in (none before they moved there), start-up included, wall = the
                # tests drawn; "computation" is the tests' own CPU there
                for key in (
                    "first frame",
                    "chart after Enter",
                    "tests drawn after Enter",
                    TESTS_PROCESS,
                ):
                    peak = "tests process peak_mb" if key == TESTS_PROCESS else "peak_mb"
                    row[f"explorer {key}"] = {
                        "wall": statistics.median(r.get(key, (0.0, 0.0))[0] for r in runs),
                        "cpu": statistics.median(r.get(key, (0.0, 0.0))[1] for r in runs),
                        "peak_mb": statistics.median(r.get(peak, 0.0) for r in runs),
                    }
                    if key == TESTS_PROCESS:
                        row[f"explorer {key}"]["computation_cpu"] = statistics.median(
                            r.get(TESTS_COMPUTATION, 0.0) for r in runs
                        )
                    print(f"[{code.label}] explorer {key}: {row[f'explorer {key}']}", flush=True)
            results[code.label] = row
            files[code.label] = db
        if options.baseline and not options.only_explorer:
            print("[same output] both versions on a copy of the baseline's file ...", flush=True)
            same = same_output(versions[0], versions[1], files["before"], pair, table_runs, scratch)
    finally:
        if options.baseline:
            for tree in scratch.glob("tree-*"):
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
        shutil.rmtree(scratch, ignore_errors=True)
        if not options.keep:
            for leftover in options.dir.glob("study-*"):
                leftover.unlink()

    print(f"\nload after: {load_average()}")
    labels = [code.label for code in versions]
    header = "| action | " + " | ".join(f"{label} wall / CPU s" for label in labels)
    header += " | peak MB |" + (" CPU ratio |" if len(labels) == 2 else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in results[labels[-1]]:
        if name.startswith("size"):
            cells = [f"{results[label][name]['value']:.1f} KB" for label in labels]
            print(f"| {name} | " + " | ".join(cells) + " | |" + (" |" if len(labels) == 2 else ""))
            continue
        cells = [
            f"{results[label][name]['wall']:.2f} / {results[label][name]['cpu']:.2f}"
            for label in labels
        ]
        peaks = " / ".join(f"{results[label][name]['peak_mb']:.0f}" for label in labels)
        line = f"| {name} | " + " | ".join(cells) + f" | {peaks} |"
        if len(labels) == 2:
            before, after = results[labels[0]][name]["cpu"], results[labels[1]][name]["cpu"]
            line += f" {before / after:.1f}x |" if after > 0 and before > 0 else " |"
        print(line)
    if f"explorer {TESTS_PROCESS}" in results[labels[-1]]:
        print(
            "\nexplorer rows: wall and CPU of the explorer's own (UI) process, but the tests "
            "process's: the CPU of the process the tests of significance ran in, start-up and "
            "imports included (its wall: until the tests were drawn; 0 where they ran in the UI "
            "process); the tests' computation alone there: "
            + ", ".join(
                f"{label} {results[label][f'explorer {TESTS_PROCESS}']['computation_cpu']:.2f} s"
                for label in labels
            )
        )
    goals = results[labels[-1]]
    print("\ngoals (after):")
    for name, limit in GOALS.items():
        key = name if name in goals else f"explorer {name}"
        if key in goals:
            value = goals[key]["cpu"]
            print(
                f"  {name}: {value:.2f} CPU-s (goal {limit} s) {'met' if value <= limit else 'NOT met'}"
            )
    if "doctor" in goals:
        d = goals["doctor"]
        met = d["wall"] <= 20 and d["peak_mb"] <= 1000
        print(
            f"  doctor: {d['wall']:.1f} s, {d['peak_mb']:.0f} MB (goal 20 s, 1 GB) "
            f"{'met' if met else 'NOT met'}"
        )
    per_sample = goals["size per sample (KB)"]["value"]
    print(
        f"  size: {per_sample:.1f} KB per sample (goal 20 KB) "
        f"{'met' if per_sample <= 20 else 'NOT met'}"
    )
    if same:
        print("\nsame output, before and after, from one file:")
        for name, verdict in same.items():
            print(f"  {name}: {verdict}")
    if options.json:
        options.json.write_text(json.dumps({**results, "same output": same}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
