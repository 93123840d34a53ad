"""The engine's numbers against the paper's procedure (full gradient, full SVD, float64)."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from modelkit import ARCHITECTURES, make_model, make_tokenizer

from layerscope.analysis.base.records import (
    MATRIX_STATISTICS,
    ComputeSettings,
    Sample,
    SampleResult,
)
from layerscope.analysis.compute import engine
from layerscope.analysis.compute.engine import compute_statistics
from layerscope.analysis.models.loading import loaded_from_objects

SAMPLES = [
    Sample(
        i,
        f"Tom has {i + 2} apples and buys 4 more. How many apples does he have now?",
        f"Step 1: Tom starts with {i + 2} apples. Step 2: {i + 2} + 4 = {i + 6}. " * (1 + i % 3)
        + f"The answer is {i + 6}.",
        input="Answer briefly." if i == 1 else "",
    )
    for i in range(4)
]


def run(loaded, samples=SAMPLES, **settings) -> list[SampleResult]:
    results: list[SampleResult] = []
    for batch in compute_statistics(loaded, samples, ComputeSettings(**settings)):
        results.extend(batch.results)
    return results


def assert_results_close(fast, reference, tolerance):
    """Every statistic within ``tolerance`` relative; see the scales used below."""
    assert [r.index for r in fast] == [r.index for r in reference]
    for a, b in zip(fast, reference, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=tolerance)
        assert (a.prompt_tokens, a.response_tokens) == (b.prompt_tokens, b.response_tokens)
        assert [(m.layer, m.projection) for m in a.matrices] == [
            (m.layer, m.projection) for m in b.matrices
        ]
        for ma, mb in zip(a.matrices, b.matrices, strict=True):
            assert ma.values.keys() == mb.values.keys()
            entry_scale = max(abs(mb.values.get("max", 0)), abs(mb.values.get("min", 0)))
            for name, expected in mb.values.items():
                got = ma.values[name]
                if name == "sigma_min":  # near zero: measured against the largest
                    scale = mb.values["sigma_max"]
                elif name == "mean":  # often exactly zero (LayerNorm): against the entries
                    scale = entry_scale
                else:
                    scale = abs(expected)
                where = f"layer {ma.layer} {ma.projection} {name}"
                assert abs(got - expected) <= tolerance * scale, (where, got, expected)
            if mb.spectrum is not None:
                assert len(ma.spectrum) == len(mb.spectrum)
                top = mb.spectrum[0]
                assert (
                    max(abs(x - y) for x, y in zip(ma.spectrum, mb.spectrum, strict=True))
                    <= tolerance * top
                )
        assert a.layer_cosines.keys() == b.layer_cosines.keys()
        for projection, matrix in b.layer_cosines.items():
            for row_a, row_b in zip(a.layer_cosines[projection], matrix, strict=True):
                assert row_a == pytest.approx(row_b, abs=tolerance)
        assert a.pair_cosines.keys() == b.pair_cosines.keys()
        for pair, values in b.pair_cosines.items():
            assert a.pair_cosines[pair] == pytest.approx(values, abs=tolerance)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fast_equals_full_svd_reference_in_float64(architecture):
    loaded = loaded_from_objects(make_model(architecture, torch.float64), make_tokenizer())
    options = {"modules": "all", "spectra": True, "batch_size": 4}
    fast = run(loaded, method="fast", **options)
    reference = run(loaded, method="reference", **options)
    assert len(fast) == len(SAMPLES)
    assert set(fast[0].matrices[0].values) == set(MATRIX_STATISTICS)
    assert_results_close(fast, reference, 1e-6)


def test_fast_uses_small_factors_and_svdvals_when_sequence_is_long(monkeypatch):
    """Both spectrum paths (T-by-T factors, and svdvals of G when T >= min(rows, cols))."""
    loaded = loaded_from_objects(make_model("llama", torch.float64), make_tokenizer())
    long_sample = [Sample(0, "Count:", " ".join(str(i) for i in range(60)))]  # T > 32
    fast = run(loaded, long_sample, method="fast", spectra=True)
    reference = run(loaded, long_sample, method="reference", spectra=True)
    assert fast[0].response_tokens + fast[0].prompt_tokens > 32
    assert_results_close(fast, reference, 1e-6)
    # With T >= min(rows, cols) = 32 the gradient has full rank: sigma_min is positive.
    assert all(m.values["sigma_min"] > 0 for m in fast[0].matrices if m.projection == "q")


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_batched_matches_one_by_one_in_float32(architecture):
    loaded = loaded_from_objects(make_model(architecture, torch.float32), make_tokenizer())
    batched = run(loaded, batch_size=4, modules="all")
    single = run(loaded, batch_size=1, modules="all")
    assert_results_close(batched, single, 1e-4)


def test_spectrum_is_complete_and_consistent():
    loaded = loaded_from_objects(make_model("gpt2", torch.float64), make_tokenizer())
    result = run(loaded, SAMPLES[:1], spectra=True)[0]
    shapes = {(t.layer, t.projection): (t.rows, t.cols) for t in loaded.targets("attn")}
    for matrix in result.matrices:
        rows, cols = shapes[(matrix.layer, matrix.projection)]
        spectrum = matrix.spectrum
        assert len(spectrum) == min(rows, cols)
        assert spectrum == sorted(spectrum, reverse=True)
        assert sum(spectrum) == pytest.approx(matrix.values["nuclear_norm"], rel=1e-12)
        assert matrix.values["sigma1_ratio"] == pytest.approx(spectrum[0] / sum(spectrum))
        probabilities = [s / sum(spectrum) for s in spectrum if s > 0]
        entropy = -sum(p * math.log(p) for p in probabilities)
        assert matrix.values["effective_rank"] == pytest.approx(math.exp(entropy), rel=1e-9)
        assert matrix.values["nuclear_per_loss"] == pytest.approx(
            matrix.values["nuclear_norm"] / result.loss
        )


def test_loss_is_mean_cross_entropy_over_response_tokens_only():
    model = make_model("llama", torch.float64)
    tokenizer = make_tokenizer()
    loaded = loaded_from_objects(model, tokenizer)
    sample = SAMPLES[1]
    result = run(loaded, [sample], entry_statistics=False, cosines=False)[0]
    prompt = f"{sample.instruction}\n{sample.input}\n"
    ids = tokenizer(prompt + sample.output)["input_ids"]
    start = len(tokenizer(prompt)["input_ids"])
    labels = torch.tensor([[-100] * start + ids[start:]])
    with torch.no_grad():
        output = model(input_ids=torch.tensor([ids]), labels=labels, use_cache=False)
    expected = torch.nn.functional.cross_entropy(
        output.logits[0, start - 1 : -1], labels[0, start:]
    )
    assert result.prompt_tokens == start
    assert result.response_tokens == len(ids) - start
    assert result.loss == pytest.approx(float(expected), rel=1e-12)
    # The library's own loss agrees to float32 precision (it upcasts logits to float32 only).
    assert result.loss == pytest.approx(float(output.loss), rel=1e-6)


def test_instruct_mode_uses_chat_template_and_drops_rejected_system_role():
    tokenizer = make_tokenizer()
    loaded = loaded_from_objects(make_model("llama", torch.float64), tokenizer)
    sample = SAMPLES[0]
    with_system = run(loaded, [sample], mode="instruct", system_prompt="Be brief.")[0]
    base = run(loaded, [sample], mode="base")[0]
    assert with_system.response_tokens == base.response_tokens  # both prompts end in a newline
    assert with_system.prompt_tokens > base.prompt_tokens
    # A template that rejects the system role: the system message is dropped, not the sample.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
    )
    without_system = run(loaded, [sample], mode="instruct", system_prompt="Be brief.")[0]
    assert without_system.prompt_tokens < with_system.prompt_tokens
    assert without_system.response_tokens == with_system.response_tokens


def test_truncated_and_empty_samples_are_skipped_with_reason():
    loaded = loaded_from_objects(make_model("llama"), make_tokenizer())
    long_prompt = Sample(2, "How many apples does Tom have now? " * 4, "Seven.")
    samples = [SAMPLES[0], Sample(7, "A question?", "   "), long_prompt]
    batches = list(compute_statistics(loaded, samples, ComputeSettings(max_length=24)))
    results = {r.index: r for b in batches for r in b.results}
    skipped = {s.index: s.reason for b in batches for s in b.skipped}
    assert list(results) == [0]
    assert results[0].prompt_tokens + results[0].response_tokens == 24  # cut, still measured
    assert skipped[7] == "empty response"
    assert "max_length=24" in skipped[2]
    assert batches[-1].done == batches[-1].total == 3


def test_cancel_stops_between_batches_and_weights_are_restored():
    model = make_model("llama")
    loaded = loaded_from_objects(model, make_tokenizer())
    cancel = threading.Event()
    seen = []
    for batch in compute_statistics(loaded, SAMPLES, ComputeSettings(batch_size=1), cancel):
        seen.extend(r.index for r in batch.results)
        cancel.set()
    assert seen == [0]
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_out_of_memory_splits_the_batch(monkeypatch):
    loaded = loaded_from_objects(make_model("llama"), make_tokenizer())
    real = engine._fast_batch

    def small_batches_only(loaded, targets, encoded, settings, timer):
        if len(encoded) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if encoded[0].index == 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(loaded, targets, encoded, settings, timer)

    monkeypatch.setattr(engine, "_fast_batch", small_batches_only)
    batches = list(compute_statistics(loaded, SAMPLES, ComputeSettings(batch_size=4)))
    assert [r.index for r in batches[0].results] == [0, 1, 2]
    assert batches[0].skipped[0].index == 3
    assert batches[0].skipped[0].reason.startswith("out of memory on cpu at ")
    assert batches[0].skipped[0].retryable


def test_other_errors_are_not_mistaken_for_out_of_memory(monkeypatch):
    loaded = loaded_from_objects(make_model("llama"), make_tokenizer())

    def broken(*args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(engine, "_fast_batch", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(compute_statistics(loaded, SAMPLES, ComputeSettings()))
