"""bfloat16 weights against the same weights in float32: how far each statistic moves.

A bf16 model runs its activations and gradients in bf16 through the model (that is what makes
it fast and small) and the engine takes the statistics in float32 or wider; bf16 keeps 8 bits
of mantissa (a relative rounding of 2^-9), so every statistic should move by a few parts in a
thousand, not more, and the loss (taken in float32 from bf16 logits) by less. The bounds here
are about three times the largest differences measured (README, "bf16 and fp16 models").
"""

from __future__ import annotations

import copy
import statistics

import pytest
import torch
from modelkit import make_model, make_tokenizer

from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute.engine import compute_statistics
from layerscope.analysis.models.loading import loaded_from_objects

SAMPLES = [
    Sample(
        i,
        f"What is {i} + {i + 1}?",
        (f"Step: {i} plus {i + 1} gives {2 * i + 1}. " * (1 + 3 * (i % 3)))
        + f"The answer is {2 * i + 1}.",
    )
    for i in range(8)
]
# Largest relative difference allowed per statistic (median bound below); measured maxima on
# these models were 0.011 (entry max/min), 0.008 (stable rank), <= 0.007 for the rest.
MAX_RELATIVE = 0.03
MEDIAN_RELATIVE = 0.005


def relative_differences(reference, other):
    """Per statistic, |other - reference| / scale over every sample and matrix (the scale of
    sigma_min is sigma_max, of the entry mean the largest entry: both are near zero)."""
    found: dict[str, list[float]] = {"loss": []}
    for a, b in zip(reference, other, strict=True):
        assert a.index == b.index
        found["loss"].append(abs(b.loss - a.loss) / abs(a.loss))
        for ma, mb in zip(a.matrices, b.matrices, strict=True):
            entries = max(abs(ma.values.get("max", 0)), abs(ma.values.get("min", 0)))
            for name, value in ma.values.items():
                scale = {"sigma_min": ma.values["sigma_max"], "mean": entries}.get(name, abs(value))
                if scale > 0:
                    found.setdefault(name, []).append(abs(mb.values[name] - value) / scale)
    return found


def run(loaded):
    settings = ComputeSettings(modules="all", batch_size=4)
    batches = compute_statistics(loaded, SAMPLES, settings)
    return sorted((r for b in batches for r in b.results), key=lambda r: r.index)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_bf16_statistics_stay_within_bf16_rounding_of_float32(architecture):
    wide = make_model(architecture, torch.float32)
    narrow = copy.deepcopy(wide).to(torch.bfloat16)
    tokenizer = make_tokenizer()
    seen_dtypes: set[torch.dtype] = set()
    embeddings = narrow.get_input_embeddings()
    handle = embeddings.register_forward_hook(lambda _m, _args, out: seen_dtypes.add(out.dtype))
    bf16 = run(loaded_from_objects(narrow, tokenizer))
    handle.remove()
    float32 = run(loaded_from_objects(wide, tokenizer))
    assert seen_dtypes == {torch.bfloat16}  # the activations stay in the model's dtype
    differences = relative_differences(float32, bf16)
    assert {"nuclear_norm", "sigma1_ratio", "effective_rank", "stable_rank"} <= set(differences)
    for name, values in differences.items():
        assert max(values) <= MAX_RELATIVE, (name, max(values))
        assert statistics.median(values) <= MEDIAN_RELATIVE, (name, statistics.median(values))
    # bf16 did run: the spectra moved (identical numbers would mean float32 ran twice).
    assert max(differences["nuclear_norm"]) > 1e-4
    assert all(isinstance(m.values["nuclear_norm"], float) for r in bf16 for m in r.matrices)
