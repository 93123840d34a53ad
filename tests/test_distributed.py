"""Data-parallel computing under torchrun (gloo on CPU): the same numbers as one process, each
sample once, only rank 0 touching the cache, and a rank killed mid-run costing nothing stored.

The slow tests start real jobs (`layerscope compute --nproc-per-node 2`, which relaunches
itself through torch.distributed.run); `tests/rank_probe/sitecustomize.py` records from inside
which rank opened a cache and each stored batch, and can hold a rank in its second batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from test_runner import model_folder  # noqa: F401 (fixture)

from layerscope.analysis.base.records import Sample
from layerscope.analysis.runs.distributed import (
    RankEnvironment,
    detect,
    plan_units,
    replica_device,
    replica_gpus,
)
from layerscope.analysis.runs.planning import RunnerError
from layerscope.app.cli import build_parser, main
from layerscope.app.cli.torchrun import launcher_argv

PROBE = Path(__file__).parent / "rank_probe"
TYPES = "none_cot,detailed_cot"  # bare answers and long chains of thought: skewed lengths


# ---- the environment, the GPU groups, the launcher's command line -------------------------


def test_detect_reads_torchrun_environment():
    assert detect({}) is None
    assert detect({"WORLD_SIZE": "1", "RANK": "0"}) is None  # a world of one runs alone
    found = detect({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert found == RankEnvironment(rank=3, world_size=4, local_rank=1, local_world_size=2)
    assert not found.coordinator
    with pytest.raises(RunnerError, match="RANK='x'"):
        detect({"WORLD_SIZE": "2", "RANK": "x"})


def test_replica_gpus_are_consecutive_groups_of_k():
    visible = ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert replica_gpus(0, 2, visible) == ["0", "1"]
    assert replica_gpus(3, 2, visible) == ["6", "7"]
    assert replica_gpus(1, 4, ["3", "5", "6", "7", "9", "10", "11", "12"]) == [
        "9",
        "10",
        "11",
        "12",
    ]
    with pytest.raises(RunnerError, match=r"local rank 2 needs GPUs 6 to 8, this node has 8"):
        replica_gpus(2, 3, visible)


def test_replica_device_narrows_visible_gpus_per_rank():
    rank1 = RankEnvironment(rank=1, world_size=2, local_rank=1, local_world_size=2)
    environ = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert replica_device(rank1, "auto", 2, environ) == "cuda:0"
    assert environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert replica_device(rank1, "cuda", None, {"CUDA_VISIBLE_DEVICES": "0,1"}) == "cuda:1"
    assert replica_device(rank1, "cpu", 2, {"CUDA_VISIBLE_DEVICES": "0,1"}) == "cpu"
    assert replica_device(rank1, "auto", None, {"CUDA_VISIBLE_DEVICES": ""}) == "cpu"
    with pytest.raises(RunnerError, match="local rank 1 has no GPU"):
        replica_device(rank1, "cuda", None, {"CUDA_VISIBLE_DEVICES": "0"})


@dataclass
class FakeJob:
    run_id: str
    missing: list[Sample] = field(default_factory=list)


def test_units_cover_each_sample_once_longest_first_and_balance_two_ranks():
    short = FakeJob("short", [Sample(i, "What is 2+2?", "4") for i in range(40)])
    long = FakeJob("long", [Sample(i, "What is 2+2?", "Step. " * (20 + i)) for i in range(40)])
    units = plan_units([short, long], batch_size=4)
    covered = [(u.run_id, s.index) for u in units for s in u.samples]
    assert sorted(covered) == sorted(
        [("short", i) for i in range(40)] + [("long", i) for i in range(40)]
    )
    assert all(len(u.samples) <= 4 for u in units)
    lengths = [u.length for u in units]
    assert lengths == sorted(lengths, reverse=True)
    # Handed out on request (each rank takes the next when it is free), the two ranks finish
    # within one unit of each other, the shortest one: the point of longest first.
    busy = [0, 0]
    for unit in units:
        busy[busy.index(min(busy))] += unit.length
    assert abs(busy[0] - busy[1]) <= min(lengths)


def test_a_failing_unit_is_retried_per_sample(model_folder, monkeypatch):  # noqa: F811
    """As in one process, a unit that raises is computed again one sample at a time; a unit in
    which every sample fails comes back as their failures (rank 0 records each), not an error."""
    from test_runner import EngineSpy

    from layerscope.analysis.base.records import BatchResult, ComputeSettings, SkippedSample
    from layerscope.analysis.models.loading import load_model
    from layerscope.analysis.runs.distributed import compute_unit

    loaded = load_model(str(model_folder), dtype="float64", device="cpu")
    samples = [Sample(i, f"What is {i} + 1?", f"{i + 1}.") for i in range(3)]
    settings = ComputeSettings(batch_size=3, max_length=64)
    with monkeypatch.context() as patch:
        EngineSpy(patch, fail_on={1})
        computed = compute_unit(loaded, samples, settings, None)
    assert [type(c) for c in computed] == [BatchResult, SkippedSample, BatchResult]
    assert [r.index for c in computed if isinstance(c, BatchResult) for r in c.results] == [0, 2]
    assert computed[1].reason == "RuntimeError: boom in [1]"
    with monkeypatch.context() as patch:
        EngineSpy(patch, fail_always=True)
        computed = compute_unit(loaded, samples, settings, None)
    assert [(c.index, c.reason) for c in computed] == [
        (i, f"RuntimeError: boom in [{i}]") for i in range(3)
    ]


def parsed(argv):
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args


def test_launcher_passes_torchrun_options_on_and_the_rest_to_the_ranks():
    argv = ["--db", "x.duckdb", "compute", "--model", "tiny", "--nproc-per-node", "2",
            "--dataset", "math", "--nnodes=2", "--rdzv-endpoint", "host:29400", "--limit", "3"]  # fmt: skip
    launcher, ranks = launcher_argv(parsed(argv))
    assert launcher == ["--nproc-per-node=2", "--nnodes=2", "--rdzv-endpoint=host:29400"]
    assert ranks == ["--db", "x.duckdb", "compute", "--model", "tiny", "--dataset", "math",
                     "--limit", "3"]  # fmt: skip
    launcher, _ = launcher_argv(parsed(["compute", "--model", "tiny", "--dataset", "math",
                                        "--nproc-per-node", "2"]))  # fmt: skip
    assert launcher == ["--nproc-per-node=2", "--standalone"]


def test_launcher_refuses_abbreviated_torchrun_options():
    from layerscope.app.cli.arguments import UsageError

    argv = ["compute", "--model", "tiny", "--dataset", "math", "--nproc-per", "2"]
    with pytest.raises(UsageError, match="spell torchrun's options in full"):
        launcher_argv(parsed(argv))


def test_torchrun_options_without_nproc_per_node_are_refused(capsys):
    assert main(["compute", "--model", "tiny", "--dataset", "math", "--master-port", "1"]) == 2
    assert "--master-port: only with --nproc-per-node" in capsys.readouterr().err


# ---- real jobs ------------------------------------------------------------------------------


def compute_argv(db, limit, batch_size):
    return [
        sys.executable, "-m", "layerscope.app", "compute", "--model", "tiny",
        "--dataset", "math", "--types", TYPES, "--limit", str(limit),
        "--batch-size", str(batch_size), "--dtype", "float64", "--db", str(db), "--quiet",
        "--nproc-per-node", "2",
    ]  # fmt: skip


def probe_env(probe_dir, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROBE), env.get("PYTHONPATH", "")])
    env["LAYERSCOPE_PROBE_DIR"] = str(probe_dir)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def stored_counts(db):
    """Per run id: (samples stored, distinct sample indices, status)."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            run_id: (count, distinct, status)
            for run_id, count, distinct, status in con.execute(
                "SELECT r.id, count(s.sample_index), count(DISTINCT s.sample_index), r.status "
                "FROM runs r LEFT JOIN samples s USING (run_no) GROUP BY r.id, r.status"
            ).fetchall()
        }


def reference_run(db, limit):
    from layerscope.analysis.runs.runner import RunRequest, execute

    request = RunRequest.from_settings(
        "tiny", "math", TYPES.split(","), {"limit": limit, "dtype": "float64", "batch_size": 4}
    )
    return [p.run_id for p in execute(request, db) if p.status == "complete"]


def wait_for(condition, job, what, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert job.poll() is None, f"the job ended before {what}: {job.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)  # polling the condition, not waiting for time


@dataclass
class KilledThenResumed:
    db: Path
    probe: Path
    limit: int
    killed: subprocess.CompletedProcess  # the job whose rank 1 was killed
    first: dict  # stored_counts after it
    again: subprocess.CompletedProcess  # the same command run again


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    """One two-rank job whose rank 1 is killed holding its second batch (rank 1 has sent one
    batch back, rank 0 has stored one), then the same command run again to the end. The tests
    below assert on it: what the kill left stored, and that the resumed cache holds the numbers
    of one process (each torchrun job costs tens of seconds of start-up, so they share it)."""
    limit = 4
    root = tmp_path_factory.mktemp("killed")
    db = root / "results.duckdb"
    probe = root / "probe"
    probe.mkdir()
    blocked, stored = probe / "blocked", probe / "stored"
    job = subprocess.Popen(
        compute_argv(db, limit, batch_size=1),
        env=probe_env(probe, LAYERSCOPE_PROBE_BLOCK_RANK="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: blocked.exists() and stored.exists(), job, "a held rank 1")
        os.kill(int(blocked.read_text().split()[0]), signal.SIGKILL)
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    killed = subprocess.CompletedProcess(job.args, job.returncode, out, err)
    first = stored_counts(db)
    again = subprocess.run(
        compute_argv(db, limit, batch_size=1),
        env=probe_env(probe),
        capture_output=True,
        text=True,
        timeout=240,
    )
    return KilledThenResumed(db, probe, limit, killed, first, again)


@pytest.mark.slow
def test_a_killed_rank_loses_nothing_stored_and_the_same_command_completes(killed_then_resumed):
    job = killed_then_resumed
    assert job.killed.returncode != 0  # torchrun reports the dead rank
    first = job.first
    assert len(first) == 2
    assert all(status != "running" for _, _, status in first.values())  # none left running
    assert all(count == distinct for count, distinct, _ in first.values())
    assert sum(count for count, _, _ in first.values()) < 2 * job.limit  # rank 1's is missing
    assert job.again.returncode == 0, job.again.stderr[-3000:]
    assert stored_counts(job.db) == {run_id: (job.limit, job.limit, "complete") for run_id in first}


@pytest.mark.slow
def test_two_ranks_give_the_numbers_of_one_process(killed_then_resumed, tmp_path):
    """The two-rank cache (half stored by the killed job, the rest by the resumed one) holds
    the numbers one process computes, each sample once, and only rank 0 ever opened it."""
    from layerscope.analysis.cache import ResultsCache

    job = killed_then_resumed
    limit, double = job.limit, job.db
    single = tmp_path / "single.duckdb"
    run_ids = reference_run(single, limit)
    assert len(run_ids) == 2
    assert job.again.returncode == 0, job.again.stderr[-3000:]
    assert job.again.stdout.split() == run_ids  # rank 0 alone prints, as one process would
    assert set((job.probe / "opened").read_text().split()) == {"0"}  # workers never open it
    assert stored_counts(double) == {run_id: (limit, limit, "complete") for run_id in run_ids}
    # auto CPU threads: OMP_NUM_THREADS=1 shared by the two ranks, at least 1 each
    assert {info.provenance["cpu_threads"] for info in ResultsCache(double).runs()} == {1}
    assert same_numbers(single, double, run_ids) > 100


def same_numbers(single, double, run_ids):
    """Asserts that two caches hold the same numbers for ``run_ids``, every sample of the first
    in the second; returns how many statistics were compared."""
    from layerscope.analysis.cache import ResultsCache

    one, two = ResultsCache(single), ResultsCache(double)
    compared = 0
    for run_id in run_ids:
        expected = {
            row["index"]: (row, matrices) for row, matrices in one.iter_sample_statistics(run_id)
        }
        for row, matrices in two.iter_sample_statistics(run_id):
            want_row, want_matrices = expected.pop(row["index"])
            assert row["loss"] == pytest.approx(want_row["loss"], rel=1e-12, abs=1e-12)
            assert [(m[0], m[1]) for m in matrices] == [(m[0], m[1]) for m in want_matrices]
            for (_, _, got, _), (_, _, want, _) in zip(matrices, want_matrices, strict=True):
                assert got.keys() == want.keys()
                for name, value in want.items():
                    assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
                    compared += 1
        assert not expected  # every sample of the single run is there
    return compared


@pytest.mark.slow
def test_ctrl_c_on_the_launcher_stops_every_rank_and_keeps_finished_batches(tmp_path):
    db = tmp_path / "results.duckdb"
    probe = tmp_path / "probe"
    probe.mkdir()
    job = subprocess.Popen(
        compute_argv(db, 20, batch_size=1),
        env=probe_env(probe),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (probe / "stored").exists(), job, "a stored batch")
        job.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the launcher
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, err[-3000:]
    assert "cancelled: finished batches are stored" in err
    counts = stored_counts(db)
    assert {status for _, _, status in counts.values()} == {"cancelled"}
    assert all(count == distinct for count, distinct, _ in counts.values())
    assert 0 < sum(count for count, _, _ in counts.values()) < 40


# ---- keyed as in one process: a hub revision, a device map ----------------------------------

MAIN, TAGGED = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A local Hugging Face cache holding ``org/llama`` at main and at the tag v1, each with
    its own weights, laid out as a download leaves it (refs naming snapshots): no hub needed."""
    from modelkit import make_model, make_tokenizer

    root = tmp_path_factory.mktemp("hub-cache")
    repo = root / "models--org--llama"
    (repo / "refs").mkdir(parents=True)
    for ref, commit, seed in (("main", MAIN, 0), ("v1", TAGGED, 1)):
        snapshot = repo / "snapshots" / commit
        make_model("llama", seed=seed).save_pretrained(snapshot)
        make_tokenizer().save_pretrained(snapshot)
        (repo / "refs" / ref).write_text(commit)
    return root


@pytest.mark.slow
def test_two_ranks_key_a_revision_under_a_device_map_as_one_process(
    hub_cache, tmp_path, monkeypatch
):
    """``org/llama`` at v1 (main is cached too, with other weights), each replica spread over
    the CPU and disk by a device map: two ranks key the run by v1's commit, as one process
    does, and store the numbers one process stores."""
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.runs.planning import plan
    from layerscope.analysis.runs.runner import RunRequest, execute

    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "default.duckdb"))  # offload beside it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # 330 kB of CPU keeps two of the llama's three layers in memory, the rest goes to disk
    placement = {"device": "cpu", "device_map": "sequential", "max_memory": "cpu=330000"}
    values = {"limit": 3, "dtype": "float64", "batch_size": 1, "revision": "v1", **placement}
    request = RunRequest.from_settings("org/llama", "math", ["none_cot"], values)
    single, double = tmp_path / "single.duckdb", tmp_path / "double.duckdb"
    run_ids = [p.run_id for p in execute(request, single) if p.status == "complete"]
    assert len(run_ids) == 1
    (at_main,) = plan(RunRequest.from_settings("org/llama", "math", ["none_cot"], {
        **values, "revision": None
    }), single)  # fmt: skip
    assert at_main.run_id != run_ids[0]  # the commit is keyed: main is another run
    job = subprocess.run(
        [sys.executable, "-m", "layerscope.app", "compute", "--model", "org/llama",
         "--revision", "v1", "--dataset", "math", "--types", "none_cot", "--limit", "3",
         "--batch-size", "1", "--dtype", "float64", "--device", "cpu",
         "--device-map", "sequential", "--max-memory", "cpu=330000", "--db", str(double),
         "--quiet", "--nproc-per-node", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    assert job.stdout.split() == run_ids  # the same key
    assert stored_counts(double) == {run_ids[0]: (3, 3, "complete")}
    (stored,) = ResultsCache(double).runs()
    assert stored.settings["model_identity"]["revision"] == TAGGED
    assert stored.provenance["world_size"] == 2
    assert stored.provenance["placed_on"] == ["cpu", "disk"]  # the device map was applied
    assert same_numbers(single, double, run_ids) > 50
