"""Fast engine versus the paper's procedure (full gradient, full SVD), side by side in one run.

For each model config and response length it times, on the same samples:
  reference  one sample at a time, full backward, torch.linalg.svd of every gradient;
  fast       the engine's batched factor method with every statistic (mean/max/min, cosines);
  fast-spec  the fast method with spectral statistics only (no mean/max/min, no cosines).
It prints per-sample seconds for forward+backward, statistics and total, the speed-up of each
fast variant over the reference, and the statistics overhead over the engine's own
forward+backward. Models have random weights (numbers do not matter for timing).

    python benchmarks/bench_engine.py                   # configs a and b, 64/256/900 tokens
    python benchmarks/bench_engine.py --configs b --lengths 64 --reference-samples 1
    python benchmarks/bench_engine.py --configs a-full --device cuda --dtype bfloat16
    python benchmarks/bench_engine.py --memory --configs a --lengths 64,512   # peak memory

``--memory`` measures instead the peak resident memory (CPU) or peak allocated memory (CUDA)
above the loaded model of one sample's bare frozen-weight forward+backward and of the fast
method (streaming and batch-end), each in a fresh process so that no run sees another's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from layerscope.analysis.engine import compute_statistics, flush_subnormals_for_this_process
from layerscope.analysis.models import loaded_from_objects, tiny_model_path
from layerscope.analysis.records import ComputeSettings, Sample

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

FILLER = (
    "Step one: the shop sells 12 pencils for 3 dollars, so one pencil costs 25 cents. "
    "Step two: Maya buys 7 pencils and pays 7 times 25 cents, which is 175 cents. "
    "The river Alder runs past the old mill and the market square of the town. "
)


def text_of_tokens(tokenizer, count: int, offset: int) -> str:
    ids = tokenizer((FILLER * (count // 20 + 4))[offset:], add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:count])


def make_samples(tokenizer, response_tokens: int, count: int) -> list[Sample]:
    return [
        Sample(i, text_of_tokens(tokenizer, 63, 7 * i), text_of_tokens(tokenizer, response_tokens, 11 * i))
        for i in range(count)
    ]  # fmt: skip


def measure(loaded, samples, settings) -> dict[str, float]:
    forward_backward = statistics = total = 0.0
    counted = 0
    response_tokens = 0
    for batch in compute_statistics(loaded, samples, settings):
        forward_backward += batch.forward_backward_seconds
        statistics += batch.statistics_seconds
        total += batch.seconds
        counted += len(batch.results)
        response_tokens += sum(r.response_tokens for r in batch.results)
    return {
        "fwd_bwd": forward_backward / counted,
        "stats": statistics / counted,
        "total": total / counted,
        "tokens": response_tokens / counted,
    }


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


def bare_forward_backward(loaded, sample) -> None:
    """A frozen-weight forward and backward of one sample's response loss, nothing kept."""
    model = loaded.model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    handle = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: output.detach().requires_grad_(True)
    )
    prompt = f"{sample.instruction}\n{sample.input}\n"
    ids = loaded.tokenizer(prompt + sample.output)["input_ids"]
    start = len(loaded.tokenizer(prompt)["input_ids"])
    input_ids = torch.tensor([ids], device=loaded.device)
    try:
        with torch.enable_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits[0]
            loss = torch.nn.functional.cross_entropy(
                logits[start - 1 : -1].float(), input_ids[0, start:]
            )
            del logits
            loss.backward()
    finally:
        handle.remove()


def memory_child(args) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    flush_subnormals_for_this_process()
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(**CONFIGS[args.configs], max_position_embeddings=2048)
    model = LlamaForCausalLM(config).to(device=device, dtype=getattr(torch, args.dtype)).eval()
    loaded = loaded_from_objects(model, tokenizer, f"config-{args.configs}")
    sample = make_samples(tokenizer, int(args.lengths), 1)
    variant = args.memory_child
    settings = ComputeSettings(batch_size=1, max_length=2048)
    if variant != "bare" and hasattr(settings, "streaming"):
        streaming, _, factorisation = variant.partition(":")
        settings = replace(
            settings,
            streaming=streaming == "fast",
            factorisation=factorisation or "per-matrix",
        )
    base = _current_bytes(device)
    _reset_peak(device)
    if variant == "bare":
        bare_forward_backward(loaded, sample[0])
    else:
        for _ in compute_statistics(loaded, sample, settings):
            pass
    print(json.dumps({"variant": variant, "base": base, "peak": _peak_bytes(device)}))


def memory_table(args) -> None:
    variants = ["bare", "fast", "fast-at-end", "fast:batched"]
    print(f"# peak memory above the loaded model, one sample, batch size 1, device {args.device}")
    print(f"{'config':7} {'resp':>5} {'variant':14} {'above model MB':>15} {'x bare':>7}")
    for name in args.configs.split(","):
        for length in args.lengths.split(","):
            bare = None
            for variant in variants:
                command = [sys.executable, __file__, "--memory-child", variant, "--configs", name,
                           "--lengths", length, "--device", args.device, "--dtype", args.dtype]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{name:7} {length:>5} {variant:14} failed: {done.stderr.strip()[-200:]}")
                    continue
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                above = (measured["peak"] - measured["base"]) / 2**20
                bare = above if variant == "bare" else bare
                ratio = f"{above / bare:6.2f}x" if bare else "      -"
                print(f"{name:7} {length:>5} {variant:14} {above:15.0f} {ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="a,b")
    parser.add_argument("--lengths", default="64,256,900")
    parser.add_argument("--fast-samples", type=int, default=3)
    parser.add_argument("--reference-samples", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--keep-subnormals", action="store_true", help="do not flush subnormals process-wide"
    )
    parser.add_argument("--memory", action="store_true", help="peak memory, not time")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    if args.memory:
        memory_table(args)
        return
    if not args.keep_subnormals:
        flush_subnormals_for_this_process()  # as the CLI and the explorer do
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}, dtype {args.dtype}, "
          f"fast batch size {args.batch_size}")  # fmt: skip
    header = (
        f"{'config':7} {'resp':>5} {'method':10} {'fwd+bwd s':>10} {'stats s':>9} "
        f"{'total s':>9} {'speed-up':>9} {'stats/fwd+bwd':>14}"
    )
    print(header)
    for name in args.configs.split(","):
        torch.manual_seed(0)
        config = LlamaConfig(**CONFIGS[name], max_position_embeddings=2048)
        model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
        loaded = loaded_from_objects(model, tokenizer, f"config-{name}")
        full = ComputeSettings(batch_size=args.batch_size, max_length=2048)
        spectral_only = replace(full, entry_statistics=False, cosines=False)
        measure(loaded, make_samples(tokenizer, 16, 1), full)  # warm-up
        for length in (int(x) for x in args.lengths.split(",")):
            samples = make_samples(
                tokenizer, length, max(args.fast_samples, args.reference_samples)
            )
            reference = measure(
                loaded, samples[: args.reference_samples], replace(full, method="reference")
            )
            rows = [("reference", reference)]
            rows.append(("fast", measure(loaded, samples[: args.fast_samples], full)))
            rows.append(("fast-spec", measure(loaded, samples[: args.fast_samples], spectral_only)))
            for method, m in rows:
                speed_up = reference["total"] / m["total"]
                overhead = m["stats"] / m["fwd_bwd"]
                print(
                    f"{name:7} {m['tokens']:5.0f} {method:10} {m['fwd_bwd']:10.3f} "
                    f"{m['stats']:9.3f} {m['total']:9.3f} {speed_up:8.1f}x {overhead:13.1%}",
                    flush=True,
                )
        del model, loaded
    print(f"# finished {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
