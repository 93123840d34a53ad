"""Streaming statistics against the batch-end path, and the factorisations against each other.

The batch-end path (``--no-streaming``) is the engine as it was: every module's factors kept
until the backward ends, per-matrix factorisations, whole gradients for max, min and cosines.
The streaming path measures each module inside its backward hook, forms gradients in blocks and
takes cosines from the factors; both are exact, so in float64 they agree to rounding (1e-10).
"""

from __future__ import annotations

import functools

import pytest
import torch
from modelkit import make_model, make_tokenizer
from test_engine import SAMPLES, assert_results_close, run

from layerscope.analysis.compute import engine, factorisations
from layerscope.analysis.compute.factorisations import Factorisation
from layerscope.analysis.compute.streaming import StreamingStatistics
from layerscope.analysis.models.loading import loaded_from_objects

ARCHITECTURES = ("llama", "gpt2", "qwen2")  # gpt2: a fused, transposed Conv1D for q, k, v


OPTIONS = {"modules": "all", "spectra": True, "batch_size": 4}


@functools.cache
def batch_end(architecture):
    """An architecture's model and its batch-end results, computed once: each factorisation's
    streamed results are compared against the same reference (the slow path)."""
    loaded = loaded_from_objects(make_model(architecture, torch.float64), make_tokenizer())
    return loaded, run(loaded, streaming=False, **OPTIONS)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("factorisation", factorisations.FACTORISATIONS)
def test_streaming_equals_batch_end_in_float64(architecture, factorisation):
    loaded, at_end = batch_end(architecture)
    streamed = run(loaded, streaming=True, factorisation=factorisation, **OPTIONS)
    assert len(streamed) == len(SAMPLES)
    assert_results_close(streamed, at_end, 1e-10)


def test_streaming_handles_long_samples_and_small_blocks(monkeypatch):
    """T >= min(rows, cols) (svdvals of G) beside short samples in one batch, and max/min
    from many row blocks."""
    from layerscope.analysis.base.records import Sample
    from layerscope.analysis.compute import spectral

    monkeypatch.setattr(spectral, "BLOCK_ENTRIES", 64)  # blocks of 2 rows for 32 columns
    loaded = loaded_from_objects(make_model("llama", torch.float64), make_tokenizer())
    samples = [Sample(0, "Count:", " ".join(str(i) for i in range(60))), *SAMPLES[:2]]
    at_end = run(loaded, samples, streaming=False, spectra=True, batch_size=3)
    streamed = run(loaded, samples, factorisation="batched", spectra=True, batch_size=3)
    assert at_end[0].prompt_tokens + at_end[0].response_tokens > 32
    assert_results_close(streamed, at_end, 1e-10)


def random_factors(lengths, rows, cols, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, rows, generator=generator, dtype=dtype) for n in lengths]
    inputs = [torch.randn(n, cols, generator=generator, dtype=dtype) for n in lengths]
    return grads, inputs


@pytest.mark.parametrize("name", ["batched", "cpu-threads"])
def test_batched_factorisations_equal_per_matrix_ones(name):
    lengths = [5, 17, 1, 12]  # padded to 17 in the batched call
    grads, inputs = random_factors(lengths, 40, 24)
    expected = [torch.linalg.svdvals(d.T @ x) for d, x in zip(grads, inputs, strict=True)]
    one_by_one = Factorisation("per-matrix").singular_values(grads, inputs, "x")
    batched = Factorisation(name)
    together = batched.singular_values(grads, inputs, "x")
    batched.close()
    for per_matrix, pending, full in zip(one_by_one, together, expected, strict=True):
        a, b = per_matrix.result(), pending.result()
        assert a.shape == b.shape == (min(len(full), a.shape[0]),)
        assert torch.allclose(a, b, rtol=0, atol=1e-10 * float(full[0]))
        assert torch.allclose(b, full[: b.shape[0]], rtol=0, atol=1e-10 * float(full[0]))


def test_factorisation_shares_input_factors_until_forgotten():
    grads, inputs = random_factors([6, 9], 30, 20)
    factorisation = Factorisation("batched")
    first = factorisation.singular_values(grads, inputs, "shared")
    assert len(factorisation._input_factors) == 1
    other_grads, _ = random_factors([6, 9], 10, 20, seed=1)  # k after q: same inputs
    second = factorisation.singular_values(other_grads, inputs, "shared")
    assert len(factorisation._input_factors) == 1
    expected = torch.linalg.svdvals(other_grads[1].T @ inputs[1])
    assert torch.allclose(second[1].result(), expected[:9], atol=1e-10 * float(expected[0]))
    assert first[0].result().shape == (6,)
    factorisation.forget("shared")
    assert factorisation._input_factors == {}


def test_unknown_factorisation_is_refused():
    with pytest.raises(ValueError, match="factorisation: choose one of per-matrix"):
        Factorisation("gpu-magic")


def test_streaming_drops_each_module_when_its_backward_step_ends(monkeypatch):
    """At any hook, only modules whose backward has not run yet hold captured inputs."""
    loaded = loaded_from_objects(make_model("llama", torch.float64), make_tokenizer())
    held: list[int] = []
    real = StreamingStatistics.module_arrived

    def watching(self, module_key, inputs, output_grads, input_key):
        held.append(len(capture_of[0].inputs))
        return real(self, module_key, inputs, output_grads, input_key)

    capture_of: list = []
    real_capture = engine.StreamingCapture

    def recording(*args):
        capture_of.append(real_capture(*args))
        return capture_of[0]

    monkeypatch.setattr(StreamingStatistics, "module_arrived", watching)
    monkeypatch.setattr(engine, "StreamingCapture", recording)
    run(loaded, SAMPLES[:2], modules="attn", batch_size=2)
    modules = 3 * 4  # three layers of q, k, v, o
    assert held == list(range(modules - 1, -1, -1))


def test_out_of_memory_inside_a_backward_hook_splits_the_batch(monkeypatch):
    """A CUDA out-of-memory raised while a module is measured (inside the backward) halves the
    batch like one raised by the forward, and leaves no hook behind."""
    model = make_model("llama", torch.float64)
    loaded = loaded_from_objects(model, make_tokenizer())
    expected = run(loaded, SAMPLES, batch_size=1)
    real = StreamingStatistics.module_arrived

    def short_of_memory(self, module_key, inputs, output_grads, input_key):
        if len(self.encoded) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, module_key, inputs, output_grads, input_key)

    monkeypatch.setattr(StreamingStatistics, "module_arrived", short_of_memory)
    got = run(loaded, SAMPLES, batch_size=4)
    assert_results_close(got, expected, 1e-10)
    assert all(not m._forward_hooks for m in model.modules())


def test_hook_work_on_a_cuda_module_synchronises_that_device(monkeypatch):
    """With modules spread over devices, the hook waits for the device the module's tensors
    live on (cuda:1 here, faked), and its time is counted as statistics."""
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    monkeypatch.setattr(StreamingStatistics, "_measure", lambda self, *args: None)

    class OnSecondGpu:
        device = torch.device("cuda:1")

    statistics = StreamingStatistics([], [], engine.ComputeSettings(), [])
    statistics.of_module[7] = [0]
    statistics.module_arrived(7, OnSecondGpu(), OnSecondGpu(), (0, ()))
    assert synchronised == [torch.device("cuda:1")]
    assert statistics.hook_seconds > 0


def test_cpu_threads_gather_the_cores_on_the_cpu(monkeypatch):
    """cpu-threads hands the T-by-T cores to a CPU thread whatever device they were made on."""
    moved = []
    real_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)

    grads, inputs = random_factors([4, 6], 20, 12)
    factorisation = Factorisation("cpu-threads")
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    pending = factorisation.singular_values(grads, inputs, "x")
    monkeypatch.undo()
    assert "cpu" in moved
    values = [p.result() for p in pending]
    factorisation.close()
    assert [v.device.type for v in values] == ["cpu", "cpu"]
    expected = torch.linalg.svdvals(grads[1].T @ inputs[1])[:6]
    assert torch.allclose(values[1], expected, atol=1e-10 * float(expected[0]))
