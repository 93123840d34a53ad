"""``--checkpointing``: the model's gradient checkpointing recomputes each layer in the backward.

A target module inside a checkpointed layer then runs twice: its first pass (whose output
receives the gradient) and the recompute (which brings the input back just before the layer's
backward). The captures must measure each module exactly once, with the recompute's input, so
the numbers equal a plain run's; the model must be left as it was.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from modelkit import make_model, make_tokenizer
from test_engine import SAMPLES, assert_results_close, run

from layerscope.analysis.compute import capture, engine, model_state, reference
from layerscope.analysis.compute.streaming import StreamingStatistics
from layerscope.analysis.models.loading import loaded_from_objects
from layerscope.app.settings_presentation import option_name

ARCHITECTURES = ("llama", "gpt2", "qwen2")  # gpt2: fused Conv1D, and dropout in its config


def loaded_model(architecture: str):
    return loaded_from_objects(make_model(architecture, torch.float64), make_tokenizer())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("streaming", [True, False])
def test_checkpointed_equals_plain_in_float64(architecture, streaming):
    loaded = loaded_model(architecture)
    options = {"modules": "all", "spectra": True, "batch_size": 4, "streaming": streaming}
    plain = run(loaded, **options)
    checkpointed = run(loaded, checkpointing=True, **options)
    assert len(checkpointed) == len(SAMPLES)
    assert all(r.layer_cosines and r.pair_cosines for r in checkpointed)
    assert all("max" in m.values for r in checkpointed for m in r.matrices)
    assert_results_close(checkpointed, plain, 1e-10)


@pytest.mark.parametrize("routes", ["factors", "formed"])
def test_checkpointed_equals_plain_on_each_forced_route(routes):
    """The factor route's products wait for every module reading an input (q, k and v):
    under checkpointing those inputs come from the recompute."""
    loaded = loaded_model("llama")
    options = {"modules": "all", "batch_size": 4, "routes": routes}
    plain = run(loaded, **options)
    assert_results_close(run(loaded, checkpointing=True, **options), plain, 1e-10)


def test_checkpointed_reference_equals_plain_reference():
    loaded = loaded_model("llama")
    plain = run(loaded, SAMPLES[:2], method="reference")
    checkpointed = run(loaded, SAMPLES[:2], method="reference", checkpointing=True)
    assert_results_close(checkpointed, plain, 1e-10)


def test_layers_really_are_recomputed(monkeypatch):
    """The target modules' forwards run twice (so the test above tests something), and each
    module inside a checkpointed layer is known to be recomputed."""
    loaded = loaded_model("llama")
    calls: Counter[int] = Counter()
    known: list[frozenset[int]] = []
    real = capture.recomputed_modules

    def recording(model, targets):
        known.append(real(model, targets))
        return known[-1]

    monkeypatch.setattr(capture, "recomputed_modules", recording)
    handles = [
        t.module.register_forward_hook(lambda m, a, o: calls.update([id(m)]))
        for t in loaded.target_modules("all")
    ]
    try:
        run(loaded, SAMPLES[:2], modules="all", batch_size=2, checkpointing=True)
    finally:
        for handle in handles:
            handle.remove()
    modules = {id(t.module) for t in loaded.target_modules("all")}
    assert set(calls) == modules and set(calls.values()) == {2}
    assert known == [frozenset(modules)]


@pytest.mark.parametrize("streaming", [True, False])
def test_each_module_is_measured_exactly_once_per_sample(monkeypatch, streaming):
    loaded = loaded_model("llama")
    targets = loaded.target_modules("all")
    measured: Counter[tuple[int, int]] = Counter()  # (module, sample row)
    if streaming:
        real = StreamingStatistics.module_arrived

        def watching(self, module_key, inputs, output_grads, input_key):
            measured.update((module_key, row) for row in range(inputs.shape[0]))
            return real(self, module_key, inputs, output_grads, input_key)

        monkeypatch.setattr(StreamingStatistics, "module_arrived", watching)
    else:
        real_statistics = reference._factor_sample_statistics

        def counting(capture, targets, row, *args):
            measured.update(
                (id(t.module), row) for t in {id(t.module): t for t in targets}.values()
            )
            return real_statistics(capture, targets, row, *args)

        monkeypatch.setattr(reference, "_factor_sample_statistics", counting)
    run(loaded, SAMPLES[:3], modules="all", batch_size=3, streaming=streaming, checkpointing=True)
    modules = {id(t.module) for t in targets}
    assert set(measured) == {(m, row) for m in modules for row in range(3)}
    assert set(measured.values()) == {1}


def test_the_recompute_brings_the_input_and_the_first_pass_input_is_not_kept(monkeypatch):
    """While a checkpointed layer waits for its backward, no input of its modules is held."""
    loaded = loaded_model("llama")
    held: list[int] = []
    real = StreamingStatistics.module_arrived
    captures: list = []
    real_capture = engine.StreamingCapture

    def recording(*args):
        captures.append(real_capture(*args))
        return captures[-1]

    def watching(self, module_key, inputs, output_grads, input_key):
        held.append(len(captures[0].inputs))
        return real(self, module_key, inputs, output_grads, input_key)

    monkeypatch.setattr(engine, "StreamingCapture", recording)
    monkeypatch.setattr(StreamingStatistics, "module_arrived", watching)
    run(loaded, SAMPLES[:2], modules="all", batch_size=2, checkpointing=True)
    # Only the layer being differentiated holds inputs (at most its other 6 modules), never
    # the layers whose backward has not begun (plain: up to 3 * 7 - 1).
    assert len(held) == 3 * 7 and max(held) <= 6


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_the_models_checkpointing_and_modes_are_restored(method):
    model = make_model("gpt2", torch.float64)
    loaded = loaded_from_objects(model, make_tokenizer())
    model.transformer.h[0].attn.train()  # a mixed state, kept as it was
    modes = {name: m.training for name, m in model.named_modules()}
    assert not model.is_activation_checkpointing
    run(loaded, SAMPLES[:1], method=method, checkpointing=True)
    assert not model.is_activation_checkpointing
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not getattr(model, "_require_grads_hooks", None)
    embeddings = model.get_input_embeddings()
    assert not embeddings._forward_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_checkpointing_already_keeps_its_own_setting():
    model = make_model("llama", torch.float64)
    model.activation_checkpointing_enable()
    funcs = {
        name: m.__dict__.get("_gradient_checkpointing_func") for name, m in model.named_modules()
    }
    hooks = list(model._require_grads_hooks)
    loaded = loaded_from_objects(model, make_tokenizer())
    run(loaded, SAMPLES[:1], checkpointing=True)
    assert model.is_activation_checkpointing
    assert model._require_grads_hooks == hooks
    assert {
        name: m.__dict__.get("_gradient_checkpointing_func") for name, m in model.named_modules()
    } == funcs
    assert len(model.get_input_embeddings()._forward_hooks) == len(hooks)


def test_a_model_that_cannot_checkpoint_is_refused_in_one_line(monkeypatch):
    model = make_model("llama", torch.float64)
    monkeypatch.setattr(type(model), "supports_gradient_checkpointing", False)
    loaded = loaded_from_objects(model, make_tokenizer())
    with pytest.raises(ValueError) as e:
        run(loaded, SAMPLES[:1], checkpointing=True)
    assert e.value.setting == "checkpointing"
    line = e.value.describe(option_name)
    assert line.startswith("--checkpointing: LlamaForCausalLM does not support")
    assert line.endswith("(run without --checkpointing)") and "\n" not in line
    assert run(loaded, SAMPLES[:1])  # without the flag it runs


def test_a_checkpointed_layer_reading_its_training_mode_is_refused():
    class Layer(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.1, training=self.training)

    with pytest.raises(ValueError) as e:
        model_state._refuse_training_reads(Layer())
    assert e.value.describe(option_name).startswith(
        "--checkpointing: Layer's forward reads its training"
    )


def test_checkpointing_is_not_part_of_the_run_key():
    from layerscope.analysis.base.records import ComputeSettings

    assert "checkpointing" not in ComputeSettings().key_fields()
    assert ComputeSettings(checkpointing=True).key_fields() == ComputeSettings().key_fields()


def test_a_layer_with_its_own_dropout_is_refused_and_the_model_left_as_it_was():
    """OPT's decoder (layerdrop) and its layers (dropout) read their own training flag:
    training mode would change the numbers, so checkpointing is refused (and nothing of it
    stays on)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=400,
        hidden_size=32,
        ffn_dim=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=256,
    )
    model = OPTForCausalLM(config).to(torch.float64).eval()  # (its projections are not targets)
    refused = pytest.raises(ValueError, match=r"^checkpointing: OPTDecoder\w*'s forward reads")
    with refused, model_state.checkpointing(model, True):
        pass
    assert not model.is_activation_checkpointing
    assert not any(m.training for m in model.modules())
