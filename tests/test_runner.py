"""The runner end to end on a small saved Llama: only missing samples are computed, runs end
complete/cancelled/failed, failures are recorded and retried."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
from modelkit import make_model, make_tokenizer

from layerscope.analysis.base.records import BatchResult, ComputeSettings, SkippedSample
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.compute import engine
from layerscope.analysis.models import loading
from layerscope.analysis.models.identity import model_identity
from layerscope.analysis.runs.runner import (
    RunnerError,
    RunRequest,
    execute,
    plan,
    run_key,
)


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "small-llama"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def write_dataset(path, count, stem="arith"):
    path.mkdir(parents=True, exist_ok=True)
    records = [
        {"instruction": f"What is {i} + {i + 1}?", "output": f"{i} + {i + 1} = {2 * i + 1}."}
        for i in range(count)
    ]
    file = path / f"{stem}.json"
    file.write_text(json.dumps(records))
    return file


@pytest.fixture
def data_file(tmp_path):
    return write_dataset(tmp_path / "data", 7)


def request_for(model_folder, data_file, **changes):
    settings = ComputeSettings(batch_size=2, max_length=64)
    return replace(
        RunRequest(model=str(model_folder), dataset=data_file, settings=settings), **changes
    )


class EngineSpy:
    """Counts the samples handed to the engine (and can make chosen samples fail)."""

    def __init__(self, monkeypatch, fail_on=frozenset(), fail_always=False, oom_on=frozenset()):
        self.seen: list[int] = []
        real = engine.compute_statistics

        def spy(loaded, samples, settings, cancel=None):
            indices = [s.index for s in samples]
            self.seen.extend(indices)
            if fail_always or set(indices) & set(fail_on):
                raise RuntimeError(f"boom in {indices}")
            for batch in real(loaded, samples, settings, cancel):
                if oom_on:
                    oom = [r for r in batch.results if r.index in oom_on]
                    batch = BatchResult(
                        [r for r in batch.results if r.index not in oom_on],
                        batch.skipped
                        + [
                            SkippedSample(
                                r.index, "out of memory on cpu at 9 tokens", retryable=True
                            )
                            for r in oom
                        ],
                        batch.done,
                        batch.total,
                    )
                yield batch

        monkeypatch.setattr(engine, "compute_statistics", spy)


def test_compute_then_everything_is_cached(tmp_path, model_folder, data_file, monkeypatch):
    db = tmp_path / "c.duckdb"
    updates = list(execute(request_for(model_folder, data_file), db))
    assert updates[0].status == "running" and updates[-1].status == "complete"
    assert [u.done for u in updates[1:-1]] == [2, 4, 6, 7]
    assert updates[-1].mean_loss is not None and updates[-1].samples_per_second > 0
    [info] = ResultsCache(db).runs()
    assert (info.status, info.samples_done, info.samples_total) == ("complete", 7, 7)
    assert (info.dataset, info.response_type, info.layers) == ("data", "arith", 3)
    assert info.provenance["batch_size"] == 2 and info.provenance["device"] == "cpu"
    for key in ("layerscope", "torch", "transformers", "started_at", "finished_at"):
        assert key in info.provenance
    assert info.settings["max_length"] == 64 and info.settings["dtype"] == "float32"

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded when everything is cached")

    monkeypatch.setattr(loading, "load_model", no_loading)
    again = list(execute(request_for(model_folder, data_file), db))
    assert [(u.status, u.done, u.total) for u in again] == [("cached", 7, 7)]


def test_limit_then_more_computes_only_the_missing(tmp_path, model_folder, data_file, monkeypatch):
    db = tmp_path / "c.duckdb"
    spy = EngineSpy(monkeypatch)
    list(execute(request_for(model_folder, data_file, limit=3), db))
    assert sorted(spy.seen) == [0, 1, 2]
    info = ResultsCache(db).runs()[0]
    assert (info.samples_done, info.samples_total, info.status) == (3, 7, "complete")
    planned = plan(request_for(model_folder, data_file), db)
    assert [(p.run_id, p.total, p.cached) for p in planned] == [(info.id, 7, 3)]
    spy.seen.clear()
    list(execute(request_for(model_folder, data_file), db))
    assert sorted(spy.seen) == [3, 4, 5, 6]
    assert ResultsCache(db).run(info.id).samples_done == 7
    seeded = plan(request_for(model_folder, data_file, limit=2, sample_seed=1), db)
    assert seeded[0].cached == 2


def test_cancel_stops_after_a_batch_and_resume_completes(tmp_path, model_folder, data_file):
    db = tmp_path / "c.duckdb"
    cancel = threading.Event()
    seen = []
    for update in execute(request_for(model_folder, data_file), db, cancel):
        seen.append(update)
        if update.done >= 2:
            cancel.set()
    assert seen[-1].status == "cancelled"
    info = ResultsCache(db).runs()[0]
    assert info.status == "cancelled" and 2 <= info.samples_done < 7
    updates = list(execute(request_for(model_folder, data_file), db))
    assert updates[-1].status == "complete"
    cache = ResultsCache(db)
    assert cache.run(info.id).samples_done == 7
    assert cache.curves([info.id], "nuclear_norm", ["q"])[0].count == [7, 7, 7]


def test_closing_the_generator_marks_the_run_cancelled(tmp_path, model_folder, data_file):
    db = tmp_path / "c.duckdb"
    updates = execute(request_for(model_folder, data_file), db)
    for update in updates:
        if update.done >= 2:
            break
    updates.close()
    assert ResultsCache(db).runs()[0].status == "cancelled"


def test_a_failing_sample_is_recorded_and_retried(tmp_path, model_folder, data_file, monkeypatch):
    db = tmp_path / "c.duckdb"
    with monkeypatch.context() as patch:
        EngineSpy(patch, fail_on={4})
        updates = list(execute(request_for(model_folder, data_file), db))
    assert updates[-1].status == "complete" and updates[-1].failed == 1
    assert any("sample 4 failed: RuntimeError: boom in [4]" in u.message for u in updates)
    cache = ResultsCache(db)
    info = cache.runs()[0]
    assert (info.samples_done, info.samples_failed) == (6, 1)
    assert [s.index for s in cache.skipped(info.id)] == [4]
    spy = EngineSpy(monkeypatch)
    list(execute(request_for(model_folder, data_file), db))
    assert spy.seen == [4]
    info = cache.run(info.id)
    assert (info.samples_done, info.samples_failed) == (7, 0)


def test_out_of_memory_skips_are_failures_retried_later(
    tmp_path, model_folder, data_file, monkeypatch
):
    db = tmp_path / "c.duckdb"
    with monkeypatch.context() as patch:
        EngineSpy(patch, oom_on={1})
        list(execute(request_for(model_folder, data_file), db))
    info = ResultsCache(db).runs()[0]
    assert (info.samples_done, info.samples_skipped, info.samples_failed) == (6, 0, 1)
    spy = EngineSpy(monkeypatch)
    list(execute(request_for(model_folder, data_file), db))
    assert spy.seen == [1]


def test_a_systematic_failure_fails_the_run(tmp_path, model_folder, data_file, monkeypatch):
    db = tmp_path / "c.duckdb"
    EngineSpy(monkeypatch, fail_always=True)
    with pytest.raises(RunnerError, match="computing failed for every sample of a chunk"):
        list(execute(request_for(model_folder, data_file), db))
    info = ResultsCache(db).runs()[0]
    assert info.status == "failed" and info.samples_done == 0
    assert "RuntimeError: boom" in info.provenance["message"]


def test_unknown_type_and_types_filter(tmp_path, model_folder):
    folder = tmp_path / "gsm"
    write_dataset(folder, 3, "gsm_no_cot")
    write_dataset(folder, 3, "gsm_with_cot")
    request = request_for(model_folder, folder, types=["detailed_cot"])
    with pytest.raises(RunnerError, match=r"'detailed_cot' is not in .* none_cot, simplified_cot"):
        plan(request, tmp_path / "c.duckdb")
    planned = plan(replace(request, types=["simplified_cot"]), tmp_path / "c.duckdb")
    assert [p.response_type for p in planned] == ["simplified_cot"]


def test_run_key_follows_what_changes_the_numbers(tmp_path, model_folder):
    identity = model_identity(str(model_folder))
    settings = ComputeSettings()
    base = run_key(identity, "abc", "none_cot", settings, "float32")
    assert base == run_key(identity, "abc", "none_cot", replace(settings, batch_size=9), "float32")
    for other in (
        run_key(identity, "abd", "none_cot", settings, "float32"),
        run_key(identity, "abc", "detailed_cot", settings, "float32"),
        run_key(identity, "abc", "none_cot", replace(settings, max_length=512), "float32"),
        run_key(identity, "abc", "none_cot", replace(settings, mode="instruct"), "float32"),
        run_key(identity, "abc", "none_cot", replace(settings, spectra=True), "float32"),
        run_key(identity, "abc", "none_cot", settings, "bfloat16"),
    ):
        assert other != base
    copy = tmp_path / "same-weights-elsewhere"
    shutil.copytree(model_folder, copy)
    same = model_identity(str(copy))
    assert run_key(same, "abc", "none_cot", settings, "float32") == base


def test_plan_does_not_import_torch(tmp_path, model_folder, data_file):
    code = (
        "import sys; from pathlib import Path\n"
        "from layerscope.analysis.runs.runner import RunRequest, plan\n"
        f"planned = plan(RunRequest(model={str(model_folder)!r}, dataset=Path({str(data_file)!r})),"
        f" {str(tmp_path / 'c.duckdb')!r})\n"
        "print(len(planned), planned[0].total, 'torch' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["1", "7", "False"]


def test_loading_stages_are_told_in_order_with_weight_progress(tmp_path, model_folder, data_file):
    stages = []
    updates = list(
        execute(
            request_for(model_folder, data_file, limit=2),
            tmp_path / "c.duckdb",
            on_stage=stages.append,
        )
    )
    assert updates[-1].status == "complete"
    steps = [stage.step for stage in stages]
    firsts = list(dict.fromkeys(steps))
    # "imports" only where torch is not imported yet (this test process has it already)
    assert firsts[-4:] == ["tokenizer", "weights", "device", "first batch"]
    weights = [s for s in stages if s.step == "weights" and s.total]
    assert weights, "transformers' weight loading bar was not routed into the stages"
    assert weights[-1].done == weights[-1].total
    assert [s.done for s in weights] == sorted(s.done for s in weights)
    again = []
    list(
        execute(
            request_for(model_folder, data_file, limit=2),
            tmp_path / "c.duckdb",
            on_stage=again.append,
        )
    )
    assert again == [], "a cached request loads nothing, so it has no stages to tell"


def test_a_cached_execute_imports_neither_torch_nor_the_model(tmp_path, model_folder, data_file):
    db = tmp_path / "c.duckdb"
    list(execute(request_for(model_folder, data_file), db))
    code = (
        "import sys; from pathlib import Path\n"
        "from layerscope.analysis.base.records import ComputeSettings\n"
        "from layerscope.analysis.runs.runner import RunRequest, execute\n"
        f"request = RunRequest(model={str(model_folder)!r}, dataset=Path({str(data_file)!r}),"
        " settings=ComputeSettings(batch_size=2, max_length=64))\n"
        f"statuses = [u.status for u in execute(request, {str(db)!r})]\n"
        "print(statuses, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["['cached']", "False", "False"]
