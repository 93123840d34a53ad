"""The CUDA-only code paths with the device faked: phase timing synchronises, memory queries ask
torch.cuda, an out-of-memory pass is halved and the cache emptied, GPUs are listed through NVML.

These run on any machine: torch.cuda's functions are replaced by recorders and the model runs
on the CPU while the engine believes its input device is ``cuda``. What they cannot show (that
real kernels finish at a synchronize, that the real allocator frees memory) needs a GPU.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from modelkit import make_model, make_tokenizer

from layerscope.analysis.base import devices
from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute import batching, engine
from layerscope.analysis.compute.engine import compute_statistics
from layerscope.analysis.compute.numerics import PhaseTimer
from layerscope.analysis.models.loading import loaded_from_objects
from layerscope.app.settings_presentation import device_choices

SAMPLES = [Sample(i, f"What is {i} + 1?", f"{i} + 1 = {i + 1}. " * (1 + i)) for i in range(4)]


class FakeCuda:
    """Records what is asked of torch.cuda; memory numbers as a device would report them."""

    def __init__(self, count=2, free=40 * 2**30, total=80 * 2**30):
        self.calls: list[tuple] = []
        self.count = count
        self.free, self.total = free, total
        self.reserved = 6 * 2**30

    def device_count(self):
        return self.count

    def synchronize(self, device=None):
        self.calls.append(("synchronize", device))

    def empty_cache(self):
        self.calls.append(("empty_cache",))

    def mem_get_info(self, device=None):
        self.calls.append(("mem_get_info", device))
        return self.free, self.total

    def memory_reserved(self, device=None):
        return self.reserved

    def memory_allocated(self, device=None):
        return 4 * 2**30

    def max_memory_allocated(self, device=None):
        return 5 * 2**30


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    for name in ("device_count", "synchronize", "empty_cache", "mem_get_info"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    for name in ("memory_reserved", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    return fake


def test_phase_timer_synchronises_every_cuda_device_at_each_phase_end(fake_cuda):
    timer = PhaseTimer(cuda=True)
    with timer.phase("forward_backward"):
        assert fake_cuda.calls == []  # not before the work: at its end
    with timer.phase("statistics"):
        pass
    assert fake_cuda.calls == [("synchronize", 0), ("synchronize", 1)] * 2
    assert set(timer.seconds) == {"forward_backward", "statistics"}
    cpu = PhaseTimer(cuda=False)
    with cpu.phase("statistics"):
        pass
    assert len(fake_cuda.calls) == 4  # a CPU run never touches CUDA


def test_phase_timer_synchronises_even_when_the_phase_raises():
    fake = FakeCuda(count=1)
    timer = PhaseTimer(cuda=True, cuda_module=fake)
    with pytest.raises(RuntimeError), timer.phase("forward_backward"):
        raise RuntimeError("CUDA out of memory")
    assert fake.calls == [("synchronize", 0)]


def test_memory_queries_ask_the_device_torch_runs_on():
    fake = FakeCuda()
    device = torch.device("cuda:1")
    memory = batching.memory_in_use(device, cuda=fake)
    assert memory == batching.MemoryInUse("cuda", 4 * 2**30, 5 * 2**30)
    # Free for a new pass: the driver's free memory plus what torch caches unused.
    assert batching.cuda_available_bytes(device, cuda=fake) == 40 * 2**30 + 2 * 2**30
    assert fake.calls == [("mem_get_info", device)]


def cuda_loaded():
    """A CPU model the engine takes for one on ``cuda`` (its tensors stay on the CPU)."""
    cpu = loaded_from_objects(make_model("llama"), make_tokenizer())
    return cpu, replace(cpu, device=torch.device("cuda"))


def test_default_budget_on_cuda_comes_from_free_memory(fake_cuda, monkeypatch):
    cpu, loaded = cuda_loaded()
    rows: list[int] = []

    def on_cpu(_loaded, targets, encoded, settings, timer):
        rows.append(len(encoded))
        return real(cpu, targets, encoded, settings, timer)

    real = engine._fast_batch
    monkeypatch.setattr(engine, "_fast_batch", on_cpu)
    fake_cuda.free, fake_cuda.reserved = 0, 4 * 2**30  # nothing free: the smallest budget
    batches = list(compute_statistics(loaded, SAMPLES, ComputeSettings(batch_size=4)))
    assert ("mem_get_info", torch.device("cuda")) in fake_cuda.calls
    assert sorted(r.index for b in batches for r in b.results) == [0, 1, 2, 3]
    assert rows == [4]  # 4 short samples fit the 512-token minimum


def test_cuda_out_of_memory_halves_the_pass_and_empties_the_cache(fake_cuda, monkeypatch):
    cpu, loaded = cuda_loaded()
    real = engine._fast_batch
    attempts: list[list[int]] = []

    def fits_two(_loaded, targets, encoded, settings, timer):
        attempts.append([e.index for e in encoded])
        if len(encoded) > 2 or any(e.index == 3 for e in encoded):  # 3 fails even alone
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cpu, targets, encoded, settings, timer)

    monkeypatch.setattr(engine, "_fast_batch", fits_two)
    settings = ComputeSettings(batch_size=4, tokens_per_batch=10_000)
    batches = list(compute_statistics(loaded, SAMPLES, settings))
    assert len(batches) == 1  # one pass, one BatchResult, whatever the splitting inside
    [batch] = batches
    assert [r.index for r in batch.results] == [0, 1, 2]
    assert [(s.index, s.retryable) for s in batch.skipped] == [(3, True)]
    assert batch.skipped[0].reason.startswith("out of memory on cuda at ")
    assert attempts == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert fake_cuda.calls.count(("empty_cache",)) == len(attempts) - 2  # after each failure
    assert batch.done == batch.total == 4


class FakeNvml:
    """pynvml's calls as a machine with two GPUs answers them."""

    NVMLError = RuntimeError

    def __init__(self, fail_init=False):
        self.fail_init = fail_init
        self.shut = False

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return [b"NVIDIA H200", "NVIDIA A10"][handle]

    def nvmlDeviceGetMemoryInfo(self, handle):
        gib = devices.GIB
        return SimpleNamespace(
            free=[130.25 * gib, 2 * gib][handle], total=[140 * gib, 24 * gib][handle]
        )


def test_gpus_are_listed_with_free_memory_through_nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = FakeNvml()
    gpus = devices.list_gpus(nvml)
    assert nvml.shut
    assert [(g.device, g.describe()) for g in gpus] == [
        ("cuda:0", "NVIDIA H200, free 130.2 GiB of 140.0 GiB"),
        ("cuda:1", "NVIDIA A10, free 2.0 GiB of 24.0 GiB"),
    ]
    choices = device_choices(("auto", "cpu", "cuda", "mps"), gpus)
    assert [value for _label, value in choices] == [
        "auto",
        "cpu",
        "cuda",
        "cuda:0",
        "cuda:1",
        "mps",
    ]
    assert choices[3][0] == "cuda:0  NVIDIA H200, free 130.2 GiB of 140.0 GiB"
    # torch numbers the visible devices from 0: the list follows CUDA_VISIBLE_DEVICES.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [(g.device, g.name) for g in devices.list_gpus(FakeNvml())] == [("cuda:0", "NVIDIA A10")]


def test_without_nvml_or_a_driver_nothing_is_listed(monkeypatch):
    assert devices.list_gpus(FakeNvml(fail_init=True)) == []
    monkeypatch.setattr(devices, "_import_nvml", lambda: None)
    assert devices.list_gpus() == [] and not devices.nvml_available()
    assert device_choices(("auto", "cpu"), []) == [("auto", "auto"), ("cpu", "cpu")]


def test_cuda_visible_devices_is_read_as_cuda_reads_it(monkeypatch):
    """Entries up to the first that is no GPU, indices and UUIDs alike, in torch's order."""
    parse = devices.parse_visible_devices
    assert parse("0,2") == ["0", "2"]
    assert parse(" 3 , 1 ") == ["3", "1"]
    assert parse("1,-1,2") == ["1"]  # -1 hides it and every later one
    assert parse("0,,1") == ["0"]  # so does an empty entry
    assert parse("") == []
    assert parse("GPU-5f3c,MIG-aa01/1/0") == ["GPU-5f3c", "MIG-aa01/1/0"]
    assert devices.visible_entries({}) is None  # unset: every GPU
    assert devices.node_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}) == ["4", "5"]
    monkeypatch.setattr(devices, "_device_files_present", lambda: True)
    monkeypatch.setattr(devices, "_device_file_count", lambda: 3)
    assert devices.node_gpus({}) == ["0", "1", "2"]
    assert devices.device_file_gpu_count({"CUDA_VISIBLE_DEVICES": "2"}) == 1
    assert devices.device_file_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    environ = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    devices.show_only(devices.node_gpus(environ)[2:], environ)
    assert environ == {"CUDA_VISIBLE_DEVICES": "6,7"}


def test_only_the_devices_module_reads_cuda_visible_devices():
    """One owner: every other module asks :mod:`layerscope.analysis.base.devices`."""
    import ast
    from pathlib import Path

    root = Path(devices.__file__).resolve().parents[2]
    readers = []
    for folder in ("analysis", "app"):
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value == "CUDA_VISIBLE_DEVICES":
                    readers.append(str(path.relative_to(root)))
    assert readers == ["analysis/base/devices.py"]


def test_cli_devices_lists_gpus_or_says_how_to(monkeypatch, capsys):
    from layerscope.app.cli import main

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "_import_nvml", lambda: FakeNvml())
    assert main(["devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "cpu",
        "cuda:0  NVIDIA H200, free 130.2 GiB of 140.0 GiB",
        "cuda:1  NVIDIA A10, free 2.0 GiB of 24.0 GiB",
    ]
    monkeypatch.setattr(devices, "_import_nvml", lambda: None)
    assert main(["devices", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["[", "{", '"device":', '"cpu"', "}", "]"]
    assert "pip install 'layerscope[gpu]'" in captured.err


async def test_the_explorers_device_field_offers_each_gpu_with_its_free_memory(monkeypatch):
    from textual.app import App
    from textual.widgets import Select

    from layerscope.app.tui.widgets.setup.settings_form import SettingsForm

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "_import_nvml", lambda: FakeNvml())

    class FormApp(App[None]):
        def compose(self):
            yield SettingsForm({"device": "cuda:1"})

    async with FormApp().run_test() as pilot:
        field = pilot.app.query_one("#setting-device", Select)
        assert field.value == "cuda:1"  # a remembered GPU is kept
        options = [(str(label), value) for label, value in field._options]
        assert ("cuda:0  NVIDIA H200, free 130.2 GiB of 140.0 GiB", "cuda:0") in options
        assert pilot.app.query_one(SettingsForm).read()["device"] == "cuda:1"
