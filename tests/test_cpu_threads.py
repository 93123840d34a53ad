"""``--cpu-threads``: torch's CPU threads, by default this process's share of the machine (its
affinity, its cgroup's quota, OMP_NUM_THREADS; a torchrun rank's share of those), set when a
computation starts and recorded with the run."""

from __future__ import annotations

import os

import pytest
import torch
from test_runner import data_file, model_folder, request_for  # noqa: F401 (fixtures)

from layerscope.analysis.base import environment
from layerscope.analysis.base.environment import EnvironmentVariableError, available_cpus
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.compute import numerics
from layerscope.analysis.runs.runner import execute


@pytest.fixture
def cpus(monkeypatch):
    """Pretend the scheduler lets this process run on ``cpus(n)`` CPUs."""

    def pretend(count):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(count)), raising=False)

    return pretend


@pytest.fixture
def threads_restored():
    """Other tests share this process: leave torch's thread count as it was."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def cgroup_v2(root, text):
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text + "\n")
    return root


def cgroup_v1(root, quota, period, folder="cpu"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


# ---- the default: affinity, cgroup quota, OMP_NUM_THREADS ----------------------------------


def test_without_quota_or_omp_it_is_the_affinity(tmp_path, cpus):
    cpus(6)
    assert available_cpus(tmp_path / "none", environ={}) == 6
    assert available_cpus(cgroup_v2(tmp_path / "v2", "max 100000"), environ={}) == 6
    assert available_cpus(cgroup_v1(tmp_path / "v1", -1, 100000), environ={}) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("800000 100000", 6)],
)
def test_a_cgroup_v2_quota_rounds_up_and_never_exceeds_the_affinity(tmp_path, cpus, text, expected):
    cpus(6)
    assert available_cpus(cgroup_v2(tmp_path, text), environ={}) == expected


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_a_cgroup_v1_quota_counts_too(tmp_path, cpus, folder):
    cpus(8)
    assert available_cpus(cgroup_v1(tmp_path, 300000, 100000, folder), environ={}) == 3


def test_unreadable_quota_files_are_no_quota(tmp_path, cpus):
    cpus(4)
    assert available_cpus(cgroup_v2(tmp_path, "garbage"), environ={}) == 4


def test_omp_num_threads_lowers_it_but_never_raises_it(tmp_path, cpus):
    cpus(4)
    root = cgroup_v2(tmp_path, "300000 100000")
    assert available_cpus(root, environ={"OMP_NUM_THREADS": "2"}) == 2
    assert available_cpus(root, environ={"OMP_NUM_THREADS": "16"}) == 3
    assert available_cpus(root, environ={"OMP_NUM_THREADS": "1,4"}) == 1  # OpenMP's list form
    assert available_cpus(root, environ={"OMP_NUM_THREADS": " "}) == 3  # blank: unset


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_omp_num_threads_is_one_line_naming_it(tmp_path, cpus, value):
    cpus(4)
    with pytest.raises(EnvironmentVariableError) as caught:
        available_cpus(tmp_path, environ={"OMP_NUM_THREADS": value})
    message = str(caught.value)
    assert "OMP_NUM_THREADS" in message and "\n" not in message


def test_without_an_affinity_call_the_cpu_count_is_used(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert available_cpus(tmp_path, environ={}) == 5


# ---- what a process or a torchrun rank uses ---------------------------------------------------


def test_asked_threads_are_used_as_asked_and_auto_is_shared_among_local_ranks(monkeypatch):
    monkeypatch.setattr(numerics, "available_cpus", lambda environ=None: 8)
    assert numerics.cpu_threads_for_this_process(None, environ={}) == 8
    assert numerics.cpu_threads_for_this_process(None, environ={"LOCAL_WORLD_SIZE": "3"}) == 2
    assert numerics.cpu_threads_for_this_process(None, environ={"LOCAL_WORLD_SIZE": "16"}) == 1
    assert numerics.cpu_threads_for_this_process(5, environ={"LOCAL_WORLD_SIZE": "4"}) == 5


def test_use_cpu_threads_sets_torch(threads_restored, monkeypatch):
    wanted = 2 if threads_restored == 1 else 1
    assert numerics.use_cpu_threads(wanted) == wanted == torch.get_num_threads()
    monkeypatch.setattr(numerics, "available_cpus", lambda environ=None: 1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert numerics.use_cpu_threads(None) == 1 == torch.get_num_threads()


def test_this_machine_gives_at_least_one_and_at_most_its_cpus():
    assert environment.CGROUP_ROOT.as_posix() == "/sys/fs/cgroup"
    assert 1 <= available_cpus(environ={}) <= (os.cpu_count() or 1)


# ---- a run: applied before loading, recorded in the provenance --------------------------------


def test_a_run_computes_on_the_asked_threads_and_records_them(
    tmp_path,
    model_folder,  # noqa: F811
    data_file,  # noqa: F811
    threads_restored,
):
    wanted = 2 if threads_restored == 1 else 1
    seen = []

    def stage(stage):
        if stage.step in ("weights", "first batch"):
            seen.append((stage.step, torch.get_num_threads(), stage.description))

    request = request_for(model_folder, data_file, limit=2, cpu_threads=wanted)
    updates = list(execute(request, tmp_path / "c.duckdb", on_stage=stage))
    assert updates[-1].status == "complete"
    assert torch.get_num_threads() == wanted
    assert {threads for _, threads, _ in seen} == {wanted}  # already while loading
    assert seen[-1][2] == f"computing the first batch on {wanted} CPU thread{'s' * (wanted > 1)}"
    [info] = ResultsCache(tmp_path / "c.duckdb").runs()
    assert info.provenance["cpu_threads"] == wanted
