"""The one prepared GPU check: the fast method at Llama-3.1-8B's shape, full depth, on one GPU.

Why one script: GPU time is lent in minutes, so every number the engine's goals need comes from
one run that fits in 8 minutes and prints one table. Sections, each skipped with a line saying
so when the time budget is spent:

  fast        per-sample forward+backward, statistics, total, peak memory above the loaded
              model and samples per second, at 128, 512 and 2,048 response tokens (the default
              options: streaming, per-matrix factorisations, every statistic, attention);
  options     the streaming / batch-end schedules, the factorisations and each forced route
              side by side (512);
  reference   the paper's full-SVD procedure on 2 samples (128 tokens) and the speed-up;
  device map  the model split across all visible GPUs (or GPU and CPU where one GPU exists)
              through ``load_model(..., device_map=..., max_memory=...)``, its numbers against a
              single-device run.

    python benchmarks/gpu_check.py                    # on the GPU machine (gpu_check.sh)
    python benchmarks/gpu_check.py --cpu-rehearsal    # the same code paths, tiny, on a CPU

  torchrun    ``layerscope compute --nproc-per-node 1`` on the built-in model and bundled math
              samples: one rank through torch.distributed, its run ids and sample count checked
              against a plain in-process run of the same request.

Random weights (timing and agreement only). Batches: the default token budget (from free device
memory) with rows capped by the default ``batch_size`` (4); the ``budget`` row lifts the cap so
the token budget alone decides.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import CONFIGS, make_samples

from layerscope.analysis.base.records import ComputeSettings
from layerscope.analysis.compute.engine import compute_statistics, flush_subnormals_for_this_process
from layerscope.analysis.compute.routes import explain, shapes_of, weights_for
from layerscope.analysis.models.loading import load_model, loaded_from_objects
from layerscope.analysis.models.sources import tiny_model_path

REHEARSAL = {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 256, "num_hidden_layers": 4, "vocab_size": 8192}  # fmt: skip


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def peak_above(device: torch.device, run) -> tuple[dict[str, float], float]:
    """``run()``'s result and its peak memory above what was allocated before, in GiB."""
    if device.type != "cuda":
        return run(), math.nan
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = run()
    torch.cuda.synchronize(device)
    return result, (torch.cuda.max_memory_allocated(device) - before) / 2**30


def measure(loaded, samples, settings) -> dict[str, float]:
    seconds = {"fwd_bwd": 0.0, "stats": 0.0, "total": 0.0}
    counted = 0
    for batch in compute_statistics(loaded, samples, settings):
        seconds["fwd_bwd"] += batch.forward_backward_seconds
        seconds["stats"] += batch.statistics_seconds
        seconds["total"] += batch.seconds
        counted += len(batch.results)
    return {k: v / max(counted, 1) for k, v in seconds.items()} | {"samples": counted}


def row(section: str, label: str, m: dict[str, float], peak: float, extra: str = "") -> None:
    per_second = 1 / m["total"] if m["total"] else math.nan
    share = m["stats"] / m["fwd_bwd"] if m["fwd_bwd"] else math.nan
    print(
        f"{section:10} {label:26} {m['fwd_bwd']:9.3f} {m['stats']:9.3f} {m['total']:9.3f} "
        f"{share:8.1%} {peak:8.2f} {per_second:8.2f}  {extra}",
        flush=True,
    )


def results_of(loaded, samples, settings):
    return [r for b in compute_statistics(loaded, samples, settings) for r in b.results]


def largest_difference(a, b) -> float:
    """Largest relative difference of any statistic (against the largest of its kind)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        for mx, my in zip(x.matrices, y.matrices, strict=True):
            for name, value in my.values.items():
                scale = abs(my.values["sigma_max"]) if name == "sigma_min" else abs(value)
                if name in ("mean", "max", "min"):
                    scale = max(abs(my.values["max"]), abs(my.values["min"]))
                got = mx.values[name]
                if math.isnan(value) and math.isnan(got):
                    continue
                worst = max(worst, abs(got - value) / scale if scale else abs(got - value))
    return worst


def device_map_section(args, device, dtype_name, config, tokenizer, samples) -> None:
    parameters = inspect.signature(load_model).parameters
    if "device_map" not in parameters or "max_memory" not in parameters:
        print("device map: not available in this build")
        return
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        options = {"dtype": dtype_name, "init": "random", "init_seed": 0}
        single = load_model(folder, device=str(device), **options)
        settings = ComputeSettings(batch_size=2, max_length=2048)
        expected = results_of(single, samples, settings)
        size = sum(p.numel() * p.element_size() for p in single.model.parameters())
        del single
        gpus = torch.cuda.device_count()
        if gpus >= 2:
            max_memory = {i: f"{size / gpus / 2**30 * 1.2:.2f}GiB" for i in range(gpus)}
            split = f"{gpus} GPUs"
        elif gpus == 1:
            max_memory = {0: f"{size / 2 / 2**30:.2f}GiB", "cpu": "200GiB"}
            split = "GPU 0 and CPU"
        else:
            max_memory = {"cpu": "200GiB"}
            split = "CPU only (rehearsal)"
        mapped = load_model(folder, device_map="auto", max_memory=max_memory, **options)
        devices = sorted({str(p.device) for p in mapped.model.parameters()})
        began = time.perf_counter()
        got = results_of(mapped, samples, settings)
        seconds = (time.perf_counter() - began) / len(samples)
        difference = largest_difference(got, expected)
        verdict = "ok" if difference <= 1e-3 else "DIFFERS"
        print(
            f"device map: {split} ({', '.join(devices)}), {seconds:.3f} s/sample, largest "
            f"relative difference to one device {difference:.2e}: {verdict}"
        )


def torchrun_section(device: torch.device) -> None:
    """One rank through torchrun against one in-process run: same run ids, same samples."""
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        base = [sys.executable, "-m", "layerscope.app", "compute", "--model", "tiny",
                "--dataset", "math", "--types", "none_cot,detailed_cot", "--limit", "8",
                "--device", device.type, "--quiet"]  # fmt: skip
        began = time.perf_counter()
        ranked = subprocess.run(
            [*base, "--db", f"{folder}/ranks.duckdb", "--nproc-per-node", "1"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        if ranked.returncode != 0:
            tail = (ranked.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"torchrun: FAILED (exit {ranked.returncode}): {tail}")
            return
        plain = subprocess.run(
            [*base, "--db", f"{folder}/plain.duckdb"], capture_output=True, text=True, timeout=240
        )
        same = sorted(ranked.stdout.split()) == sorted(plain.stdout.split())
        verdict = "ok" if same and plain.returncode == 0 else "DIFFERS"
        print(
            f"torchrun: 1 rank on {device.type}, 16 samples in {seconds:.1f} s (start-up "
            f"included), run ids {' '.join(sorted(ranked.stdout.split()))} vs in-process: {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-rehearsal", action="store_true")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all sections")
    args = parser.parse_args()
    flush_subnormals_for_this_process()
    budget = Budget(args.budget)
    if args.cpu_rehearsal:
        device, dtype_name, shape, lengths, option_length = (
            "cpu",
            "float32",
            REHEARSAL,
            (16, 32, 64),
            32,
        )
        count = 4
    else:
        device, dtype_name, shape, lengths, option_length = (
            "cuda",
            "bfloat16",
            CONFIGS["a-full"],
            (128, 512, 2048),  # 512 and 2048: the rows of gpu_projection.py
            512,
        )
        count = 8
    device = torch.device(device)
    dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    config = LlamaConfig(**shape, max_position_embeddings=8192)
    torch.manual_seed(0)
    began = time.perf_counter()
    model = LlamaForCausalLM(config).to(dtype=dtype).to(device).eval()
    loaded = loaded_from_objects(model, tokenizer, "llama-8b-shape")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# gpu_check: {name}, torch {torch.__version__}, {dtype_name}, "
          f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, model built in "
          f"{time.perf_counter() - began:.0f} s, batch size {ComputeSettings().batch_size}")  # fmt: skip
    print(f"{'section':10} {'run':26} {'fwd+bwd':>9} {'stats':>9} {'total':>9} "
          f"{'st/fb':>8} {'peak GiB':>8} {'samp/s':>8}  (seconds per sample)")  # fmt: skip
    default = ComputeSettings(max_length=4096)
    shapes = shapes_of((t.projection, t.rows, t.cols) for t in loaded.targets("attn"))
    for line in explain(shapes, [n + 63 for n in lengths], weights=weights_for(device.type)):
        print(f"# route {line}")
    measure(loaded, make_samples(tokenizer, 16, 2), default)  # warm-up
    for length in lengths:
        samples = make_samples(tokenizer, length, count)
        m, peak = peak_above(device, lambda s=samples, on=loaded: measure(on, s, default))
        row("fast", f"{length} tokens", m, peak)
    samples = make_samples(tokenizer, option_length, count)
    options = [
        ("streaming, per-matrix", {}),
        ("streaming, batched", {"factorisation": "batched"}),
        ("streaming, cpu-threads", {"factorisation": "cpu-threads"}),
        ("batch-end, per-matrix", {"streaming": False}),
        ("streaming, spectral only", {"entry_statistics": False, "cosines": False}),
        ("routes forced: factors", {"routes": "factors"}),
        ("routes forced: formed", {"routes": "formed"}),
        ("token budget alone", {"batch_size": 64}),
    ]
    for label, change in options:
        if budget.left() < 60:
            print(f"options    {label:26} skipped (time budget)")
            continue
        settings = replace(default, **change)
        m, peak = peak_above(device, lambda s=settings, on=loaded: measure(on, samples, s))
        row("options", f"{label} ({option_length})", m, peak)
    reference_length = lengths[0]
    fast = measure(loaded, make_samples(tokenizer, reference_length, 2), default)
    reference = replace(default, method="reference")
    done = []
    for sample in make_samples(tokenizer, reference_length, 2):
        if budget.left() < 90:
            break
        done.append(measure(loaded, [sample], reference))
    if done:
        m = {k: sum(d[k] for d in done) / len(done) for k in ("fwd_bwd", "stats", "total")}
        speed_up = m["total"] / fast["total"]
        row("reference", f"{len(done)} samples ({reference_length})", m, math.nan,
            f"fast is {speed_up:.0f}x faster")  # fmt: skip
    else:
        print("reference  skipped (time budget)")
    del model, loaded
    if device.type == "cuda":
        torch.cuda.empty_cache()
    small = LlamaConfig(**(shape | {"num_hidden_layers": min(4, shape["num_hidden_layers"])}),
                        max_position_embeddings=4096)  # fmt: skip
    if budget.left() < 45:
        print("device map: skipped (time budget)")
    else:
        device_map_section(
            args, device, dtype_name, small, tokenizer, make_samples(tokenizer, 64, 2)
        )
    if budget.left() < 40:
        print("torchrun: skipped (time budget)")
    else:
        torchrun_section(device)
    print(
        json.dumps(
            {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_left_s": round(budget.left())}
        )
    )


if __name__ == "__main__":
    main()
