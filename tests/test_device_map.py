"""Large models spread by a device map (accelerate): the same numbers as on one device.

A CPU-only machine can still exercise the real path: ``--max-memory cpu=...`` small enough
makes accelerate keep some layers on the CPU and offload the rest to disk, loaded per forward
by its hooks. The GPU-only parts (which GPU the inputs go to, which GPUs --max-memory may name)
are checked with the device faked.
"""

from __future__ import annotations

import gc

import pytest
import torch
from modelkit import make_model, make_tokenizer
from test_engine import SAMPLES, assert_results_close, run

from layerscope.analysis.base import devices
from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.setting_values import check_values, parse_max_memory
from layerscope.analysis.models import placement
from layerscope.analysis.models.loading import load_model
from layerscope.analysis.models.sources import ModelLoadError
from layerscope.analysis.runs import planning
from layerscope.analysis.runs.planning import RunnerError, RunRequest, check_device
from layerscope.analysis.runs.runner import execute
from layerscope.app.settings_presentation import option_name

# The llama of modelkit in float64 is 391 kB; 330 kB of CPU keeps the embeddings and two of
# its three layers in memory and sends the last layer, the norm and the head to disk.
CPU_AND_DISK = {"cpu": 330_000}


def placements(loaded) -> set[str]:
    """Where the layers are (transformers records no map when one device holds them all)."""
    recorded = getattr(loaded.model, "hf_device_map", None)
    if recorded:
        return {str(where) for where in recorded.values()}
    return {p.device.type for p in loaded.model.parameters()}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "llama"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def results_cache(tmp_path, monkeypatch):
    """The offload folder lives beside the results cache: here, in the test's folder."""
    monkeypatch.setenv("LAYERSCOPE_DB", str(tmp_path / "results.duckdb"))
    return tmp_path


def test_cpu_and_disk_offload_equals_the_single_device_run_in_float64(model_folder):
    single = load_model(str(model_folder), dtype="float64", device="cpu")
    stages: list[LoadStage] = []
    spread = load_model(
        str(model_folder),
        dtype="float64",
        device="cpu",
        device_map="sequential",
        max_memory=CPU_AND_DISK,
        on_stage=stages.append,
    )
    placed = set(spread.model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, spread.model.hf_device_map
    assert spread.offloaded_to_disk and not single.offloaded_to_disk
    assert spread.device == torch.device("cpu")  # the embeddings' device: where input ids go
    options = {"modules": "all", "spectra": True, "batch_size": 2, "method": "fast"}
    expected = run(single, **options)
    got = run(spread, **options)
    assert len(got) == len(SAMPLES)
    assert_results_close(got, expected, 1e-10)
    # The stages still tell what loading does: weights counted, then where the layers went.
    weights = [s for s in stages if s.step == "weights" and s.total]
    assert weights and weights[-1].done == weights[-1].total
    assert stages[-1].step == "device" and "cpu, disk" in stages[-1].description


def test_reference_method_on_a_cpu_only_device_map_equals_one_device(model_folder):
    single = load_model(str(model_folder), dtype="float64", device="cpu")
    spread = load_model(str(model_folder), dtype="float64", device="cpu", device_map="auto")
    assert placements(spread) == {"cpu"}
    options = {"modules": "attn", "method": "reference", "batch_size": 1}
    assert_results_close(
        run(spread, SAMPLES[:2], **options), run(single, SAMPLES[:2], **options), 1e-10
    )


def test_offload_folder_is_under_the_cache_folder_and_removed_with_the_model(
    model_folder, results_cache
):
    spread = load_model(
        str(model_folder), dtype="float64", device_map="sequential", max_memory=CPU_AND_DISK
    )
    assert spread.offloaded_to_disk
    offload_root = results_cache / "offload"
    # One folder for this model (safetensors weights are read in place; .bin ones land here).
    (folder,) = list(offload_root.iterdir())
    assert folder.is_dir()
    del spread
    gc.collect()
    assert list(offload_root.iterdir()) == []


def test_a_run_through_the_runner_with_a_device_map_has_the_same_key_and_numbers(
    model_folder, results_cache
):
    """Not keyed: a run spread over CPU and disk is the run computed on one device."""
    values = {"limit": 2, "dtype": "float64", "device": "cpu", "batch_size": 2}
    plain = RunRequest.from_settings(str(model_folder), "math", ["none_cot"], values)
    spread = RunRequest.from_settings(
        str(model_folder),
        "math",
        ["none_cot"],
        {**values, "device_map": "sequential", "max_memory": "cpu=330000"},
    )
    assert spread.device_map == "sequential" and spread.max_memory == "cpu=330000"
    first = list(execute(spread, results_cache / "spread.duckdb"))
    second = list(execute(plain, results_cache / "plain.duckdb"))
    assert first[-1].status == second[-1].status == "complete"
    assert first[-1].run_id == second[-1].run_id


def test_reference_method_refuses_layers_on_disk(model_folder, results_cache):
    request = RunRequest.from_settings(
        str(model_folder),
        "math",
        ["none_cot"],
        {
            "limit": 1,
            "device": "cpu",
            "device_map": "sequential",
            "max_memory": "cpu=200000",
            "dtype": "float64",
            "method": "reference",
        },
    )
    with pytest.raises(RunnerError) as raised:
        list(execute(request, results_cache / "db.duckdb"))
    assert raised.value.describe(option_name).startswith(
        "--method reference needs every weight's gradient"
    )


def test_max_memory_text_is_parsed_for_from_pretrained():
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=64GiB") == {
        0: "20GiB",
        1: "20GiB",
        "cpu": "64GiB",
    }
    assert parse_max_memory("cpu=330000") == {"cpu": 330_000}
    assert parse_max_memory(None) is None


@pytest.mark.parametrize("text", ["0:20GiB", "gpu=1GB", "0=lots", "0=1GiB,0=2GiB"])
def test_bad_max_memory_is_one_line_naming_the_option(text):
    with pytest.raises(SettingError) as raised:
        parse_max_memory(text)
    line = raised.value.describe(option_name)
    assert line.startswith("--max-memory: ") and "\n" not in line
    with pytest.raises(RunnerError) as raised_again:
        check_device("cpu", "auto", text)
    assert raised_again.value.describe(option_name).startswith("--max-memory")


def test_device_map_choices_and_max_memory_need_each_other(model_folder):
    with pytest.raises(SettingError, match="choose one of none, auto, balanced, sequential"):
        check_values({"device_map": "everywhere"})
    with pytest.raises(RunnerError) as runner_error:
        check_device("cpu", "none", "cpu=1GiB")
    with pytest.raises(ModelLoadError) as load_error:
        load_model(str(model_folder), max_memory={"cpu": 1})
    for raised in (runner_error, load_error):
        assert raised.value.describe(option_name).startswith("--max-memory needs a device map")


def test_max_memory_may_name_only_gpus_the_machine_has(monkeypatch):
    """CUDA faked: two GPUs. A third is refused before anything loads, naming the option."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("auto", "auto", "0=20GiB,1=20GiB,cpu=64GiB")
    with pytest.raises(RunnerError) as raised:
        check_device("auto", "balanced", "0=1GiB,2=1GiB")
    assert raised.value.describe(option_name).startswith(
        "--max-memory 0=1GiB,2=1GiB: this machine has 2"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RunnerError, match="CUDA is not available"):
        check_device("cpu", "auto", "0=1GiB")


def test_without_torch_imported_the_device_files_answer(monkeypatch):
    monkeypatch.setattr(devices, "_device_files_present", lambda: True)
    monkeypatch.setattr(devices, "_device_file_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delitem(planning.sys.modules, "torch")
    with pytest.raises(RunnerError, match="has 1 CUDA device"):
        check_device("auto", "auto", "1=10GiB")


def test_input_device_is_the_embeddings_gpu_under_a_device_map():
    """CUDA faked: the map accelerate would record on a two-GPU machine."""
    model = make_model("llama")
    model.hf_device_map = {
        "model.embed_tokens": 1,
        "model.layers.0": 1,
        "model.layers.1": 0,
        "model.layers.2": "cpu",
        "model.norm": "disk",
        "lm_head": "disk",
    }
    assert placement.mapped_input_device(model) == torch.device("cuda", 1)
    model.hf_device_map = {"": 0}
    assert placement.mapped_input_device(model) == torch.device("cuda", 0)
    model.hf_device_map = {"model": "disk", "lm_head": "cpu"}
    assert placement.mapped_input_device(model) == torch.device("cpu")


def test_random_init_is_spread_too(model_folder):
    spread = load_model(
        str(model_folder), dtype="float64", device_map="auto", init="random", init_seed=3
    )
    single = load_model(str(model_folder), dtype="float64", init="random", init_seed=3)
    assert placements(spread) == {"cpu"}
    options = {"modules": "attn", "batch_size": 2}
    assert_results_close(
        run(spread, SAMPLES[:2], **options), run(single, SAMPLES[:2], **options), 1e-10
    )
