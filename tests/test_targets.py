"""Target discovery: the right matrices, correctly split, found by name, described without weights."""

from __future__ import annotations

import pytest
import torch
from modelkit import ARCHITECTURES, config_for, make_model, make_tokenizer

from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute.engine import compute_statistics
from layerscope.analysis.models.loading import describe_targets, loaded_from_objects
from layerscope.analysis.models.sources import ModelLoadError
from layerscope.analysis.models.targets import UnsupportedArchitectureError, discover_targets

SAMPLE = [Sample(0, "Tom has 3 apples and buys 4 more.", "3 + 4 = 7. The answer is 7.")]


def zero_part(model, targets, layer, projection):
    """Zero the weight rows (and bias) that the target says belong to ``projection``."""
    target = next(t for t in targets if (t.info.layer, t.info.projection) == (layer, projection))
    weight = target.module.weight
    rows = target.output_features
    with torch.no_grad():
        if target.transposed:  # Conv1D: in x out
            weight[:, rows if rows is not None else slice(None)] = 0
        else:
            weight[rows if rows is not None else slice(None)] = 0
        if getattr(target.module, "bias", None) is not None:
            target.module.bias[rows if rows is not None else slice(None)] = 0


def nuclear_norms(model, modules="attn"):
    loaded = loaded_from_objects(model, make_tokenizer())
    settings = ComputeSettings(modules=modules, cosines=False)
    result = next(iter(compute_statistics(loaded, SAMPLE, settings))).results[0]
    return {(m.layer, m.projection): m.values["nuclear_norm"] for m in result.matrices}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize(
    ("zeroed", "vanishing"),
    [("q", {"k"}), ("k", {"q"}), ("v", {"q", "k", "o"})],
    ids=["q=0 kills k", "k=0 kills q", "v=0 kills q k o"],
)
def test_each_part_is_the_projection_it_is_named(architecture, zeroed, vanishing):
    """Independent of the split code: with q = 0 attention scores are constant, so the key
    gradient is exactly zero; k = 0 likewise zeroes the query gradient; v = 0 zeroes the
    attention output, hence the gradients of o, q and k. A wrong split (e.g. of NeoX's
    per-head interleaving) leaves some of them non-zero."""
    model = make_model(architecture, torch.float64)
    targets = discover_targets(model, "attn")
    zero_part(model, targets, 1, zeroed)
    norms = nuclear_norms(model)
    for projection in ("q", "k", "v", "o"):
        assert norms[(0, projection)] > 0  # untouched layer: not trivially zero
        if projection in vanishing:
            assert norms[(1, projection)] == 0.0, projection
        elif projection != zeroed:
            assert norms[(1, projection)] > 0, projection


def test_phi3_gate_and_up_halves():
    model = make_model("phi3", torch.float64)
    targets = discover_targets(model, "mlp")
    zero_part(model, targets, 0, "up")  # down's input = act(gate) * up = 0: gate's gradient is 0
    norms = nuclear_norms(model, "mlp")
    assert norms[(0, "gate")] == 0.0
    assert norms[(0, "up")] > 0 and norms[(1, "gate")] > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_describe_targets_from_config_alone(architecture, tmp_path):
    config = config_for(architecture)
    config.architectures = [
        type(make_model(architecture)).__name__
    ]  # as save_pretrained of a model writes it
    config.save_pretrained(tmp_path)  # a folder with a config and no weights at all
    described = describe_targets(str(tmp_path), "all")
    loaded = discover_targets(make_model(architecture), "all")
    assert described == [t.info for t in loaded]
    first_layer = [(t.projection, t.rows, t.cols) for t in described if t.layer == 0]
    hidden = 32
    assert first_layer[:4] == [
        ("q", hidden, hidden),
        ("k", 16 if architecture in ("llama", "qwen2", "gemma2", "phi3") else hidden, hidden),
        ("v", 16 if architecture in ("llama", "qwen2", "gemma2", "phi3") else hidden, hidden),
        ("o", hidden, hidden),
    ]
    assert [t.projection for t in described if t.layer == 0][4:] in (
        ["gate", "up", "down"],
        ["up", "down"],
    )


def test_parameter_names_are_the_models_own():
    names = [t.info.parameter for t in discover_targets(make_model("llama"), "attn")][:4]
    assert names == [f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"]
    gpt2 = [t.info.parameter for t in discover_targets(make_model("gpt2"), "attn")][:4]
    assert gpt2 == [
        "transformer.h.0.attn.c_attn.weight[q]",
        "transformer.h.0.attn.c_attn.weight[k]",
        "transformer.h.0.attn.c_attn.weight[v]",
        "transformer.h.0.attn.c_proj.weight",
    ]
    parameters = dict(make_model("llama").named_parameters())
    assert all(n in parameters for n in names)


def test_unsupported_architecture_names_the_modules_found():
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, is_decoder=True)
    )
    with pytest.raises(UnsupportedArchitectureError) as error:
        discover_targets(model, "attn")
    message = str(error.value)
    assert "bert" in message and "attention.self.query" in message


def test_describe_of_a_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(
        ModelLoadError, match="no such folder, and not in the local Hugging Face cache"
    ):
        describe_targets(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        describe_targets(str(tmp_path / "empty"))
