"""The cost model's routes: each one exact (forced, against the full-SVD reference in float64),
and the choices the model makes at the shapes users have."""

from __future__ import annotations

import pytest
import torch
from modelkit import make_model, make_tokenizer
from test_engine import SAMPLES, assert_results_close, run

from layerscope.analysis.compute import cosines as cosines_module
from layerscope.analysis.compute import engine
from layerscope.analysis.compute.routes import explain, plan_batch, plan_sample, shapes_of
from layerscope.analysis.models.loading import loaded_from_objects

ARCHITECTURES = ("llama", "gpt2", "qwen2", "phi3")  # gpt2, phi3: fused q/k/v (and gate/up)
OPTIONS = {"modules": "all", "spectra": True, "batch_size": 4}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def reference(request):
    loaded = loaded_from_objects(make_model(request.param, torch.float64), make_tokenizer())
    return loaded, run(loaded, method="reference", **OPTIONS)


@pytest.mark.parametrize("routes", ["factors", "formed", "auto"])
def test_every_route_equals_the_full_svd_reference_in_float64(reference, routes):
    loaded, expected = reference
    got = run(loaded, routes=routes, **OPTIONS)
    assert_results_close(got, expected, 1e-10)


def test_routes_mixed_within_a_batch_and_across_a_pair_are_exact(reference, monkeypatch):
    """What a tight memory budget gives: some projections keep formed gradients and others
    use factors (so the q-o and k-v cosines mix routes), differently per sample of a batch."""
    loaded, expected = reference
    chosen = []

    def some_formed(loaded, targets, positions, settings):
        shapes = shapes_of((t.info.projection, t.info.rows, t.info.cols) for t in targets)
        plans = [
            plan_sample(
                shapes,
                p,
                cosines=True,
                entry_statistics=True,
                formed_allowed={"q", "v", "up"} if row % 2 == 0 else {"o", "k", "down"},
                forced="auto",
            )
            for row, p in enumerate(positions)
        ]
        chosen.extend(plans)
        return plans

    monkeypatch.setattr(engine, "plan_routes", some_formed)
    got = run(loaded, **OPTIONS)
    routes = {(p, plan[p].cosines) for plan in chosen for p in plan.projections}
    assert {("q", "formed"), ("o", "factors"), ("o", "formed"), ("q", "factors")} <= routes
    assert_results_close(got, expected, 1e-10)


def test_factor_route_in_small_chunks_of_layers(monkeypatch):
    """Chunks of one layer at a time (the bound that keeps long samples' memory flat)."""
    monkeypatch.setattr(cosines_module, "FACTOR_CHUNK_ENTRIES", 1)
    monkeypatch.setattr(cosines_module, "FORMED_CHUNK_COLUMNS", 7)
    loaded = loaded_from_objects(make_model("llama", torch.float64), make_tokenizer())
    expected = run(loaded, SAMPLES[:2], method="reference", **OPTIONS)
    for routes in ("factors", "formed"):
        assert_results_close(run(loaded, SAMPLES[:2], routes=routes, **OPTIONS), expected, 1e-10)


def test_input_products_are_formed_once_for_q_k_and_v(monkeypatch):
    """q, k and v read one input: their X_i X_j^T products are made once for the three."""
    calls = []
    real = cosines_module.SampleCosines._layer_products

    def counting(self, group, prior, keys):
        calls.append(tuple(sorted(k[0] for k in keys)))
        return real(self, group, prior, keys)

    monkeypatch.setattr(cosines_module.SampleCosines, "_layer_products", counting)
    loaded = loaded_from_objects(make_model("llama", torch.float64), make_tokenizer())
    run(loaded, SAMPLES[:1], routes="factors", modules="all")
    layers = 3
    assert calls.count(("k", "q", "v")) == layers
    assert calls.count(("gate", "up")) == layers
    assert calls.count(("o",)) == calls.count(("down",)) == layers


def test_forced_routes_are_followed():
    shapes = shapes_of([("q", 576, 576), ("k", 192, 576)] * 30)
    for forced in ("factors", "formed"):
        plan = plan_sample(shapes, 100, cosines=True, entry_statistics=True, forced=forced)
        assert {plan[p].cosines for p in shapes} == {forced}
        assert {plan[p].spectrum for p in shapes} == {forced}
    # T between rows and cols: the wider side alone is factored; T >= both: nothing to factor.
    plan = plan_sample(shapes, 500, cosines=True, entry_statistics=True, forced="factors")
    assert plan["k"].spectrum == "factors" and plan["q"].spectrum == "factors"
    plan = plan_sample(shapes, 600, cosines=True, entry_statistics=True, forced="factors")
    assert plan["k"].spectrum == "formed" and plan["q"].spectrum == "formed"


@pytest.mark.parametrize(("positions", "rows", "cols"), [(7, 20, 30), (25, 20, 30), (25, 30, 20)])
def test_spectrum_from_factors_of_the_sides_longer_than_t(positions, rows, cols):
    """T below both sides (a T x T core), or between them (one side factored): the singular
    values of G = D^T X either way."""
    from layerscope.analysis.compute.spectral import singular_values_from_factors

    generator = torch.Generator().manual_seed(positions + rows)
    d = torch.randn(positions, rows, generator=generator, dtype=torch.float64)
    x = torch.randn(positions, cols, generator=generator, dtype=torch.float64)
    expected = torch.linalg.svdvals(d.T @ x)
    got = singular_values_from_factors(d, x)
    assert got.shape[0] == min(positions, rows, cols)
    assert torch.allclose(got, expected[: got.shape[0]], rtol=0, atol=1e-12 * float(expected[0]))


def test_gqa_keys_and_values_factor_their_inputs_at_medium_lengths():
    """SmolLM2's k and v (192 x 576) at 319 positions: svdvals of 192 x 319, not 192 x 576."""
    plan = plan_sample(smollm2(), 319, cosines=True, entry_statistics=True)
    assert plan["k"].spectrum == plan["v"].spectrum == "factors"


def smollm2():
    shapes = [("q", 576, 576), ("k", 192, 576), ("v", 192, 576), ("o", 576, 576)]
    return shapes_of(shapes * 30)


def llama8b(layers=32):
    shapes = [("q", 4096, 4096), ("k", 1024, 4096), ("v", 1024, 4096), ("o", 4096, 4096)]
    return shapes_of(shapes * layers)


def test_deep_models_form_gradients_for_cosines_at_real_lengths():
    """At 30 layers the factor products cost L^2 T^2 (rows + cols): forming each G once and one
    Gram is far cheaper from 64 tokens on; at 4,096 tokens by two orders of magnitude."""
    for positions in (64, 256, 1024, 4096):
        plan = plan_sample(smollm2(), positions, cosines=True, entry_statistics=True)
        assert {plan[p].cosines for p in "qkvo"} == {"formed"}
    long = plan_sample(smollm2(), 4096, cosines=True, entry_statistics=True)
    assert long["q"].alternative_cost > 50 * long["q"].cost


def test_wide_matrices_at_short_lengths_keep_factors():
    """4096-wide matrices at 64 tokens: the T-by-T factors are cheaper than a 4096x4096 SVD."""
    plan = plan_sample(llama8b(), 64, cosines=True, entry_statistics=True)
    assert plan["q"].spectrum == "factors"
    plan = plan_sample(llama8b(), 8192, cosines=True, entry_statistics=True)
    assert plan["q"].spectrum == "formed" and plan["q"].cosines == "formed"


def test_memory_budget_limits_formed_gradients():
    shapes = llama8b()
    unlimited = plan_batch(shapes, [512, 512], cosines=True, entry_statistics=True)
    assert all(plan[p].cosines == "formed" for plan in unlimited for p in "qkvo")
    budget = 3 << 30
    limited = plan_batch(
        shapes, [512, 512], cosines=True, entry_statistics=True, budget_bytes=budget
    )
    kept = sum(plan.formed_bytes for plan in limited)
    assert 0 < kept <= budget
    assert any(plan[p].cosines == "factors" for plan in limited for p in "qkvo")
    nothing = plan_batch(shapes, [512], cosines=True, entry_statistics=True, budget_bytes=0)
    assert all(nothing[0][p].cosines == "factors" for p in "qkvo")
    assert "do not fit the memory budget" in nothing[0]["q"].reason


def test_explain_names_each_projection_and_route():
    lines = explain(smollm2(), [64, 1024])
    assert len(lines) == 8
    assert lines[0].startswith("T=64") and " q " in lines[0] and "cosines formed" in lines[0]


def test_formed_gradients_budget_is_a_quarter_of_free_memory():
    from layerscope.analysis.compute.batching import formed_gradients_budget

    assert formed_gradients_budget(torch.device("cuda:0"), lambda _d: 40 << 30) == 10 << 30
    assert formed_gradients_budget(torch.device("cpu"), lambda _d: 8 << 30) == 2 << 30
    assert formed_gradients_budget(torch.device("cpu")) > 0  # the host's available memory
