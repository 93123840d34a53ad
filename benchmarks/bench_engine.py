"""The engine against the paper's procedure at real depth, measured fairly, side by side.

For each model config and response length (64-token prompts) it runs, sample by sample and in
a rotating order, the variants

  floor       one frozen-weight forward+backward of the sample with the engine's kind of hooks
              (a forward hook on every target module keeping its input, an output-gradient hook
              receiving the gradient, which then drops both) and no statistics: the cost that
              any method built on the same backward pays;
  fast        the engine (``compute_statistics``, method fast) with every statistic: spectrum,
              mean/max/min, layer-by-layer and q-o/k-v cosines;
  fast-nocos  the same without cosines;
  reference   the engine's ``method="reference"`` (full backward, full SVD, cosines of the
              flattened gradients);
  paper       the paper's procedure as its script does it (MingLiiii/Layer_Gradient,
              code_gradient/get_gradient_values.py), written here from its description: every
              weight requires grad, ``loss.backward()`` of the response loss (labels -100 on the
              prompt), then ``torch.linalg.svd`` in float32 of each layer's q/k/v/o weight
              gradient and its statistics (nuclear norm, sigma_max, sigma1 ratio, Frobenius,
              effective rank, mean/max/min); no cosines.

Every variant is warmed up once (untimed) before timing; each is timed in wall
(``time.perf_counter``) and CPU seconds (``time.process_time``: all threads of the process);
the load average is recorded before and after. Before any ratio is printed, the outputs of fast,
fast-nocos, reference and paper are checked against each other (nuclear norm, sigma_max,
Frobenius norm and loss to 1e-3 relative; cosines of fast and reference to 1e-4 absolute); the
run stops with an error where they disagree. Models have random weights
(``AutoModelForCausalLM.from_config``): the numbers do not matter for timing, the shapes do.

    python benchmarks/bench_engine.py                          # smollm2, qwen25, llama8b; 64/256/1024
    python benchmarks/bench_engine.py --configs smollm2 --layers 3 --lengths 16 --repeats 1  # smoke
    python benchmarks/bench_engine.py --configs qwen25 --threads 1,2     # + floor/fast at 1 and 2 threads
    python benchmarks/bench_engine.py --configs llama8b --methods floor,fast,fast-nocos --lengths 1024
    python benchmarks/bench_engine.py --json /tmp/timings.json           # every raw timing
    python benchmarks/bench_engine.py --memory --configs smollm2 --lengths 1024,4096   # peak memory

``--memory`` measures instead the peak resident memory (CPU) or peak allocated memory (CUDA)
above the loaded model of one sample, each variant (floor, fast, fast-nocos; more with
``--memory-variants``) in a fresh process so that no run sees another's peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.compute.engine import compute_statistics, flush_subnormals_for_this_process
from layerscope.analysis.compute.text import encode_sample
from layerscope.analysis.models.loading import loaded_from_objects
from layerscope.analysis.models.sources import tiny_model_path

PROMPT_TOKENS = 64  # prompt tokens of every sample, BOS and the "\n" before the response included

# The older configs as LlamaConfig keyword arguments (gpu_check.py imports these).
CONFIGS = {
    # (a) two layers with Llama-3.1-8B's layer shapes
    "a": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
          "intermediate_size": 14336, "num_hidden_layers": 2, "vocab_size": 8192},
    # (a) at full depth, for a GPU
    "a-full": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
               "intermediate_size": 14336, "num_hidden_layers": 32, "vocab_size": 8192},
    # (b) a hidden-1024, 8-layer GQA Llama
    "b": {"hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
          "intermediate_size": 4096, "num_hidden_layers": 8, "vocab_size": 8192},
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A model config to build with random weights: its config class, arguments and a note."""

    config_class: type
    arguments: dict[str, Any]
    note: str


SHAPES: dict[str, Shape] = {
    name: Shape(LlamaConfig, arguments, f"Llama, older config ({name})")
    for name, arguments in CONFIGS.items()
}
SHAPES["smollm2"] = Shape(
    LlamaConfig,
    {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
     "intermediate_size": 1536, "num_hidden_layers": 30, "vocab_size": 49152,
     "tie_word_embeddings": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
     "max_position_embeddings": 8192},
    "SmolLM2-135M's published shapes (tied embeddings, as published)",
)  # fmt: skip
SHAPES["qwen25"] = Shape(
    Qwen2Config,
    {"hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
     "intermediate_size": 4864, "num_hidden_layers": 24, "vocab_size": 151936,
     "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
     "max_position_embeddings": 32768},
    "Qwen2.5-0.5B's published shapes (tied embeddings, as published)",
)  # fmt: skip
SHAPES["llama8b"] = Shape(
    LlamaConfig,
    {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
     "intermediate_size": 14336, "num_hidden_layers": 8, "vocab_size": 128256,
     "tie_word_embeddings": True, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
     "max_position_embeddings": 131072},
    "Llama-3.1-8B's layer shapes at 8 of its 32 layers; embeddings TIED here (the published "
    "model's are not) to save ~2 GB of weights and ~2 GB of gradient in reference/paper; no "
    "RoPE scaling",
)  # fmt: skip

METHODS = ("floor", "fast", "fast-nocos", "reference", "paper")
ENGINE_METHODS = ("fast", "fast-nocos", "reference")
SPECTRAL_KEYS = ("nuclear_norm", "sigma_max", "frobenius_norm")
RELATIVE_TOLERANCE = 1e-3
COSINE_TOLERANCE = 1e-4


# --- models and samples ------------------------------------------------------------------------


def build_model(name: str, layers: int | None, positions: int, device: Any, dtype: Any) -> Any:
    """The config's model with random weights (seed 0), in eval mode on ``device``."""
    shape = SHAPES[name]
    arguments = dict(shape.arguments)
    if layers is not None:
        arguments["num_hidden_layers"] = layers
    arguments["max_position_embeddings"] = max(
        arguments.get("max_position_embeddings", 0), positions
    )
    config = shape.config_class(**arguments)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    return model.to(device=device, dtype=dtype).eval()


def _single_token_words(tokenizer: Any) -> list[str]:
    """Words that are one token each with their leading space (byte-level BPE: 'Ġword')."""
    words = sorted(
        token[1:]
        for token in tokenizer.get_vocab()
        if token.startswith("Ġ") and token[1:].isalpha() and token[1:].islower()
    )
    return [w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def _text(words: Sequence[str], seed: int, count: int) -> str:
    chosen = random.Random(seed)
    return "".join(" " + chosen.choice(words) for _ in range(max(count, 0)))


def make_sample(tokenizer: Any, response_tokens: int, index: int, words: Sequence[str]) -> Sample:
    """A sample of exactly ``PROMPT_TOKENS`` prompt and ``response_tokens`` response tokens (as
    the engine encodes it: base mode), of words drawn at random with seed ``index``."""
    settings = ComputeSettings(max_length=PROMPT_TOKENS + response_tokens + 64)
    prompt_words, response_words = PROMPT_TOKENS - 2, response_tokens
    for _ in range(20):
        sample = Sample(
            index,
            _text(words, 2 * index, prompt_words),
            _text(words, 2 * index + 1, response_words),
        )
        encoded = encode_sample(sample, tokenizer, settings)
        prompt_off = PROMPT_TOKENS - encoded.prompt_tokens
        response_off = response_tokens - encoded.response_tokens
        if prompt_off == 0 and response_off == 0:
            return sample
        prompt_words += prompt_off
        response_words += response_off
    raise RuntimeError(f"could not make a sample of {PROMPT_TOKENS} + {response_tokens} tokens")


def make_samples(tokenizer: Any, response_tokens: int, count: int) -> list[Sample]:
    """``count`` samples of ``PROMPT_TOKENS`` + ``response_tokens`` tokens (gpu_check uses it)."""
    words = _single_token_words(tokenizer)
    return [make_sample(tokenizer, response_tokens, i, words) for i in range(count)]


# --- the variants ------------------------------------------------------------------------------


def settings_for(method: str, max_length: int) -> ComputeSettings:
    full = ComputeSettings(
        batch_size=1, max_length=max_length, entry_statistics=True, cosines=True, spectra=False
    )
    if method == "fast-nocos":
        return replace(full, cosines=False)
    if method == "reference":
        return replace(full, method="reference")
    return full


def run_engine(loaded: Any, sample: Sample, settings: ComputeSettings) -> dict[str, Any]:
    results, skipped, phases = [], [], {"forward_backward": 0.0, "statistics": 0.0}
    for batch in compute_statistics(loaded, [sample], settings):
        results.extend(batch.results)
        skipped.extend(batch.skipped)
        phases["forward_backward"] += batch.forward_backward_seconds
        phases["statistics"] += batch.statistics_seconds
    if skipped or len(results) != 1:
        raise RuntimeError(f"the engine did not measure the sample: {skipped}")
    result = results[0]
    return {
        "loss": result.loss,
        "matrices": {(m.layer, m.projection): dict(m.values) for m in result.matrices},
        "layer_cosines": result.layer_cosines,
        "pair_cosines": result.pair_cosines,
        "phases": phases,
    }


def run_floor(loaded: Any, sample: Sample, settings: ComputeSettings) -> dict[str, Any]:
    """Frozen-weight forward+backward of the sample, hooks as the engine's, no statistics."""
    model = loaded.model
    encoded = encode_sample(sample, loaded.tokenizer, settings)
    input_ids = torch.tensor([encoded.input_ids], device=loaded.device)
    mask = torch.ones_like(input_ids)
    parameters = list(model.parameters())
    before = [p.requires_grad for p in parameters]
    inputs: dict[int, torch.Tensor] = {}
    arrived = [0]

    def forward_hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
        key = id(module)
        inputs[key] = args[0].detach()

        def receive(gradient: torch.Tensor) -> None:
            gradient.detach()
            inputs.pop(key, None)
            arrived[0] += 1

        output.register_hook(receive)

    modules = {id(t.module): t.module for t in loaded.target_modules(settings.modules)}
    handles = [m.register_forward_hook(forward_hook) for m in modules.values()]
    handles.append(
        model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: output.detach().requires_grad_(True)
        )
    )
    for p in parameters:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[0]
            first = max(encoded.response_start, 1)
            loss_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
            loss = torch.nn.functional.cross_entropy(
                logits[first - 1 : encoded.length - 1].to(loss_dtype), input_ids[0, first:]
            )
            del logits
            loss.backward()
        value = loss.item()
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(parameters, before, strict=True):
            p.requires_grad_(flag)
        inputs.clear()
    if arrived[0] != len(modules):
        raise RuntimeError(f"floor: {arrived[0]} output gradients for {len(modules)} modules")
    return {"loss": value}


ATTENTION_WEIGHT = re.compile(r"layers\.(\d+)\.(?:self_attn|attention)\.([qkvo])_proj\.weight$")


def paper_statistics(gradient: torch.Tensor) -> dict[str, float]:
    """What the paper's script reports of one weight gradient, from ``torch.linalg.svd``."""
    matrix = gradient.float()
    singular = torch.linalg.svd(matrix, full_matrices=False).S
    nuclear = float(singular.sum())
    normalized = singular / singular.sum()
    entropy = -float((normalized * torch.log(normalized.clamp_min(1e-30))).sum())
    return {
        "nuclear_norm": nuclear,
        "sigma_max": float(singular[0]),
        "sigma1_ratio": float(singular[0]) / nuclear if nuclear > 0 else math.nan,
        "frobenius_norm": float(singular.square().sum().sqrt()),
        "effective_rank": math.exp(entropy),
        "mean": float(matrix.mean()),
        "max": float(matrix.max()),
        "min": float(matrix.min()),
    }


def run_paper(loaded: Any, sample: Sample, settings: ComputeSettings) -> dict[str, Any]:
    """The paper's procedure: every weight trainable, HF loss with prompt labels -100, full
    backward, then an SVD of each layer's q/k/v/o weight gradient found by parameter name."""
    model = loaded.model
    tokenizer = loaded.tokenizer
    prompt = sample.prompt + "\n"
    ids = tokenizer(prompt + sample.output)["input_ids"][: settings.max_length]
    prompt_length = len(tokenizer(prompt)["input_ids"])
    input_ids = torch.tensor([ids], device=loaded.device)
    labels = input_ids.clone()
    labels[0, :prompt_length] = -100
    parameters = list(model.parameters())
    before = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(True)
    matrices: dict[tuple[int, str], dict[str, float]] = {}
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
            loss.backward()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                found = ATTENTION_WEIGHT.search(name)
                if found and parameter.grad is not None:
                    key = (int(found.group(1)), found.group(2))
                    matrices[key] = paper_statistics(parameter.grad)
        value = loss.item()
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(parameters, before, strict=True):
            p.requires_grad_(flag)
    return {"loss": value, "matrices": matrices}


RUNNERS: dict[str, Callable[[Any, Sample, ComputeSettings], dict[str, Any]]] = {
    "floor": run_floor,
    "fast": run_engine,
    "fast-nocos": run_engine,
    "reference": run_engine,
    "paper": run_paper,
}


def _synchronize(device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(loaded: Any, method: str, sample: Sample, max_length: int) -> dict[str, Any]:
    """One untimed garbage collection, then the variant's wall and CPU seconds and output."""
    settings = settings_for(method, max_length)
    gc.collect()
    _synchronize(loaded.device)
    wall, cpu = time.perf_counter(), time.process_time()
    output = RUNNERS[method](loaded, sample, settings)
    _synchronize(loaded.device)
    output["wall"] = time.perf_counter() - wall
    output["cpu"] = time.process_time() - cpu
    return output


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    shift = by % len(items) if items else 0
    return list(items[shift:]) + list(items[:shift])


# --- agreement ---------------------------------------------------------------------------------


def _relative(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def agreement(outputs: dict[str, dict[str, Any]]) -> tuple[float, float, list[str]]:
    """Worst relative difference of the spectral statistics and loss among the methods that
    ran, worst absolute cosine difference of fast and reference, and the disagreements."""
    worst_relative = worst_cosine = 0.0
    problems: list[str] = []
    measured = [m for m in ("fast", "fast-nocos", "reference", "paper") if m in outputs]
    for i, a in enumerate(measured):
        for b in measured[i + 1 :]:
            diff = _relative(outputs[a]["loss"], outputs[b]["loss"])
            worst_relative = max(worst_relative, diff)
            if diff > RELATIVE_TOLERANCE:
                problems.append(
                    f"loss {a} {outputs[a]['loss']:.6g} vs {b} {outputs[b]['loss']:.6g}"
                )
            left, right = outputs[a]["matrices"], outputs[b]["matrices"]
            if set(left) != set(right):
                problems.append(f"{a} and {b} measured different matrices")
                continue
            for key in sorted(left):
                for statistic in SPECTRAL_KEYS:
                    x, y = left[key][statistic], right[key][statistic]
                    diff = _relative(x, y)
                    worst_relative = max(worst_relative, diff)
                    if not diff <= RELATIVE_TOLERANCE:
                        problems.append(
                            f"layer {key[0]} {key[1]} {statistic}: {a} {x:.6g} vs {b} {y:.6g}"
                        )
    if "fast" in outputs and "reference" in outputs:
        for kind in ("layer_cosines", "pair_cosines"):
            fast, reference = outputs["fast"][kind], outputs["reference"][kind]
            if set(fast) != set(reference):
                problems.append(f"{kind}: fast has {sorted(fast)}, reference {sorted(reference)}")
                continue
            for name in fast:
                x = torch.tensor(fast[name], dtype=torch.float64)
                y = torch.tensor(reference[name], dtype=torch.float64)
                diff = float((x - y).abs().max()) if x.numel() else 0.0
                worst_cosine = max(worst_cosine, diff)
                if not diff <= COSINE_TOLERANCE:
                    problems.append(f"{kind} {name}: fast vs reference differ by {diff:.2e}")
    return worst_relative, worst_cosine, problems


# --- the measurement ---------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_config(args: Any, name: str, tokenizer: Any, words: list[str]) -> dict[str, Any]:
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    max_length = PROMPT_TOKENS + max(lengths) + 8
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    began = time.perf_counter()
    model = build_model(name, args.layers, max_length + 8, device, dtype)
    loaded = loaded_from_objects(model, tokenizer, f"config-{name}")
    layers = model.config.num_hidden_layers
    targets = loaded.targets("attn")
    print(f"\n## config {name}: {SHAPES[name].note}; {layers} layers, hidden "
          f"{model.config.hidden_size}, vocab {model.config.vocab_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{len(targets)} target matrices; built in {time.perf_counter() - began:.0f} s",
          flush=True)  # fmt: skip
    explain_routes(loaded, name, lengths)
    record: dict[str, Any] = {"config": name, "layers": layers, "load_before": load_average()}
    warm = make_sample(tokenizer, lengths[0], 10_000, words)
    for method in methods:  # warm-up: once each, untimed
        timed(loaded, method, warm, max_length)
    runs: list[dict[str, Any]] = []
    worst_relative = worst_cosine = 0.0
    problems: list[str] = []
    for length in lengths:
        for repeat in range(args.repeats):
            sample = make_sample(tokenizer, length, repeat, words)
            outputs: dict[str, dict[str, Any]] = {}
            order = rotated(methods, repeat)
            for method in order:
                outputs[method] = timed(loaded, method, sample, max_length)
                runs.append(
                    {"length": length, "repeat": repeat, "method": method,
                     "position": order.index(method), "wall": outputs[method]["wall"],
                     "cpu": outputs[method]["cpu"], "phases": outputs[method].get("phases"),
                     "load": load_average()}
                )  # fmt: skip
            relative, cosine, found = agreement(outputs)
            worst_relative, worst_cosine = max(worst_relative, relative), max(worst_cosine, cosine)
            problems.extend(f"{length} tokens, repeat {repeat}: {p}" for p in found)
            print(f"#   {length} tokens, repeat {repeat + 1}/{args.repeats}: "
                  + ", ".join(f"{m} {outputs[m]['wall']:.2f}s" for m in order), flush=True)  # fmt: skip
    record["load_after"] = load_average()
    record["runs"] = runs
    record["worst_relative_difference"] = worst_relative
    record["worst_cosine_difference"] = worst_cosine
    compared = [m for m in methods if m != "floor"]
    print(f"# load average before {record['load_before']}, after {record['load_after']}")
    if problems:
        print(f"outputs agree: NO ({len(problems)} disagreements; the first 20:)")
        for problem in problems[:20]:
            print(f"  {problem}")
        record["agree"] = False
        return record
    if len(compared) > 1:
        print(f"outputs agree: yes (worst rel diff {worst_relative:.1e} over "
              f"{', '.join(compared)}; worst cosine diff {worst_cosine:.1e})")  # fmt: skip
    else:
        print("outputs agree: not checked (fewer than two methods with outputs)")
    record["agree"] = True
    print_table(runs, lengths, methods)
    if args.threads:
        record["threads"] = measure_threads(args, loaded, tokenizer, words, lengths, max_length)
    del model, loaded
    gc.collect()
    return record


def summary(runs: list[dict[str, Any]], length: int, method: str, key: str) -> list[float]:
    return [r[key] for r in runs if r["length"] == length and r["method"] == method]


def print_table(runs: list[dict[str, Any]], lengths: list[int], methods: list[str]) -> None:
    print(f"{'resp':>5} {'method':10} {'wall s':>8} {'range':>15} {'cpu s':>8} "
          f"{'over floor wall':>15} {'cpu':>7} {'x paper wall/cpu':>17} "
          f"{'x reference wall/cpu':>21}")  # fmt: skip
    for length in lengths:
        medians = {
            m: (
                statistics.median(summary(runs, length, m, "wall")),
                statistics.median(summary(runs, length, m, "cpu")),
            )
            for m in methods
        }
        for method in methods:
            walls = summary(runs, length, method, "wall")
            wall, cpu = medians[method]
            spread = f"{min(walls):.2f}-{max(walls):.2f}"
            if "floor" in medians and method != "floor":
                floor_wall, floor_cpu = medians["floor"]
                over = (
                    f"{(wall - floor_wall) / floor_wall:15.1%} {(cpu - floor_cpu) / floor_cpu:7.1%}"
                )
            else:
                over = f"{'-':>15} {'-':>7}"
            ratios = []
            for base in ("paper", "reference"):
                if base in medians and method not in ("floor", base):
                    ratios.append(f"{medians[base][0] / wall:.1f}x/{medians[base][1] / cpu:.1f}x")
                else:
                    ratios.append("-")
            print(f"{length:5} {method:10} {wall:8.3f} {spread:>15} {cpu:8.3f} {over} "
                  f"{ratios[0]:>17} {ratios[1]:>21}", flush=True)  # fmt: skip


def measure_threads(
    args: Any,
    loaded: Any,
    tokenizer: Any,
    words: list[str],
    lengths: list[int],
    max_length: int,
) -> list[dict[str, Any]]:
    """floor and fast at each thread count, alternated, rotated each repeat."""
    counts = [int(x) for x in args.threads.split(",")]
    original = torch.get_num_threads()
    methods = ["floor", "fast"]
    runs: list[dict[str, Any]] = []
    warm = make_sample(tokenizer, lengths[0], 10_000, words)
    try:
        for count in counts:
            torch.set_num_threads(count)
            for method in methods:
                timed(loaded, method, warm, max_length)
        for length in lengths:
            for repeat in range(args.repeats):
                sample = make_sample(tokenizer, length, repeat, words)
                for count in rotated(counts, repeat):
                    torch.set_num_threads(count)
                    for method in rotated(methods, repeat):
                        out = timed(loaded, method, sample, max_length)
                        runs.append({"length": length, "repeat": repeat, "threads": count,
                                     "method": method, "wall": out["wall"], "cpu": out["cpu"],
                                     "load": load_average()})  # fmt: skip
    finally:
        torch.set_num_threads(original)
    print(f"# threads: floor and fast at {', '.join(map(str, counts))} threads, alternated "
          f"(medians of {args.repeats}; wall s / cpu s)")  # fmt: skip
    header = "".join(f" {f'{c} thr wall':>11} {'cpu':>7}" for c in counts)
    print(f"{'resp':>5} {'method':10}{header} {'over floor per count (wall)':>30}")
    for length in lengths:
        floors = {}
        for method in methods:
            cells, overs = [], []
            for count in counts:
                picked = [r for r in runs if (r["length"], r["method"], r["threads"]) == (length, method, count)]  # fmt: skip
                wall = statistics.median(r["wall"] for r in picked)
                cpu = statistics.median(r["cpu"] for r in picked)
                cells.append(f" {wall:11.3f} {cpu:7.3f}")
                if method == "floor":
                    floors[count] = wall
                else:
                    overs.append(f"{(wall - floors[count]) / floors[count]:.1%}")
            print(f"{length:5} {method:10}{''.join(cells)} {' / '.join(overs) or '-':>30}")
    return runs


# --- the cost model's description, where another module provides one ---------------------------


def explain_routes(loaded: Any, name: str, lengths: list[int]) -> None:
    """Print the cost model's route per projection and length, where the optional module
    ``layerscope.analysis.compute.routes`` exists (``shapes_of`` from ``(projection, rows, cols)`` of the
    target matrices, ``explain(shapes, positions)`` a line per length and projection); the
    benchmark runs without it."""
    try:
        from layerscope.analysis import routes  # type: ignore[attr-defined]
    except ImportError:
        print("# routes: layerscope.analysis.compute.routes not available (no route description)")
        return
    positions = [PROMPT_TOKENS + length - 1 for length in lengths]  # the measured positions
    try:
        targets = [(t.projection, t.rows, t.cols) for t in loaded.targets("attn")]
        element_bytes = getattr(loaded.dtype, "itemsize", 4)
        shapes = routes.shapes_of(targets, element_bytes)
        lines = routes.explain(shapes, positions)
    except Exception as error:  # an optional module in progress must not stop the benchmark
        print(f"# routes: no description ({type(error).__name__}: {error})")
        return
    print(f"# routes chosen by {routes.__name__} ({name}; T = measured positions):")
    for line in lines if not isinstance(lines, str) else lines.splitlines():
        print(f"#   {line}")


# --- memory ------------------------------------------------------------------------------------


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    with open("/proc/self/clear_refs", "w") as clear:  # Linux: reset VmHWM to the current RSS
        clear.write("5")


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _current_bytes(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _resident_bytes()


MEMORY_VARIANTS = {
    # variant: (runner method, changes to its settings)
    "floor": ("floor", {}),
    "fast": ("fast", {}),
    "fast-nocos": ("fast-nocos", {}),
    "fast-at-end": ("fast", {"streaming": False}),
    "fast:batched": ("fast", {"factorisation": "batched"}),
    "reference": ("reference", {}),
    "paper": ("paper", {}),
}


def memory_child(args: Any) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    flush_subnormals_for_this_process()
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    length = int(args.lengths)
    max_length = PROMPT_TOKENS + length + 8
    model = build_model(
        args.configs, args.layers, max_length + 8, device, getattr(torch, args.dtype)
    )
    loaded = loaded_from_objects(model, tokenizer, f"config-{args.configs}")
    sample = make_sample(tokenizer, length, 0, _single_token_words(tokenizer))
    method, changes = MEMORY_VARIANTS[args.memory_child]
    settings = replace(settings_for(method, max_length), **changes)
    base = _current_bytes(device)
    _reset_peak(device)
    RUNNERS[method](loaded, sample, settings)
    print(json.dumps({"variant": args.memory_child, "base": base, "peak": _peak_bytes(device)}))


def memory_table(args: Any) -> list[dict[str, Any]]:
    variants = args.memory_variants.split(",")
    unknown = [v for v in variants if v not in MEMORY_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown memory variants {unknown}; known: {', '.join(MEMORY_VARIANTS)}")
    print(f"# peak memory above the loaded model, one sample of {PROMPT_TOKENS} prompt tokens, "
          f"batch size 1, device {args.device}, {args.dtype}, each variant in a fresh process")  # fmt: skip
    print(f"{'config':8} {'resp':>5} {'variant':14} {'above model MB':>15} {'x floor':>8}")
    rows = []
    for name in args.configs.split(","):
        for length in args.lengths.split(","):
            floor = None
            for variant in variants:
                command = [sys.executable, __file__, "--memory-child", variant, "--configs", name,
                           "--lengths", length, "--device", args.device, "--dtype", args.dtype]  # fmt: skip
                if args.layers is not None:
                    command += ["--layers", str(args.layers)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{name:8} {length:>5} {variant:14} failed: {done.stderr.strip()[-300:]}")
                    continue
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                above = (measured["peak"] - measured["base"]) / 2**20
                floor = above if variant == "floor" else floor
                ratio = f"{above / floor:7.2f}x" if floor else "       -"
                print(f"{name:8} {length:>5} {variant:14} {above:15.0f} {ratio}", flush=True)
                rows.append({"config": name, "length": int(length), **measured})
    return rows


# --- main --------------------------------------------------------------------------------------


def machine_line(args: Any) -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return (
        f"# machine: {platform.processor() or platform.machine()}, {cores} cores "
        f"({usable} usable), torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, device {device}, "
        f"{args.dtype}, load average {load_average()}, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="smollm2,qwen25,llama8b",
                        help=f"comma-separated, of: {', '.join(SHAPES)}")  # fmt: skip
    parser.add_argument("--layers", type=int, help="override every config's layer count (smoke)")
    parser.add_argument("--lengths", default="64,256,1024", help="response tokens, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed samples per length")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of: {', '.join(METHODS)}")  # fmt: skip
    parser.add_argument("--threads", help="e.g. 1,2: floor and fast again at these thread counts")
    parser.add_argument("--json", help="write every raw timing to this file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--keep-subnormals", action="store_true", help="do not flush subnormals process-wide"
    )
    parser.add_argument("--memory", action="store_true", help="peak memory, not time")
    parser.add_argument("--memory-variants", default="floor,fast,fast-nocos",
                        help=f"with --memory, of: {', '.join(MEMORY_VARIANTS)}")  # fmt: skip
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    for name in args.configs.split(","):
        if name not in SHAPES:
            raise SystemExit(f"unknown config {name!r}; known: {', '.join(SHAPES)}")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    print(machine_line(args), flush=True)
    if args.memory:
        rows = memory_table(args)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"machine": machine_line(args), "memory": rows}, out, indent=1)
        return
    if not args.keep_subnormals:
        flush_subnormals_for_this_process()  # as the CLI and the explorer do
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    words = _single_token_words(tokenizer)
    print(f"# {args.repeats} repeat(s) per length, methods interleaved sample by sample in a "
          f"rotating order, each warmed up once; {PROMPT_TOKENS}-token prompts, batch size 1; "
          f"medians, range = min-max of wall seconds")  # fmt: skip
    records = []
    failed = False
    for name in args.configs.split(","):
        record = measure_config(args, name, tokenizer, words)
        records.append(record)
        failed = failed or not record["agree"]
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine_line(args), "configs": records}, out, indent=1)
    print(f"# finished {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {load_average()}")
    if failed:
        raise SystemExit("outputs disagree: no ratios printed for those configs (see above)")


if __name__ == "__main__":
    main()
