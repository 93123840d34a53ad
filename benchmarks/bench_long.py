"""Peak memory and time of one long sample with and without ``--checkpointing``.

The follow-up paper studies 4k-16k token reasoning traces; there activation memory is the limit.
One sample (a 64-token prompt, the rest response) through a model of SmolLM2-135M's shape (Llama:
30 layers, hidden 576, 9 heads, 3 KV heads, intermediate 1536, vocabulary 49152, tied embeddings)
with random weights, float32, on the CPU, one thread. Each variant runs in a fresh process, which
prints its peak resident memory above the loaded model (VmHWM, reset after loading), its wall
time and its CPU time (user + system; on a shared machine the steadier of the two):

  floor          a frozen-weight forward and backward of the response loss, with the embeddings'
                 require-grad hook only: no capture, no statistics (what any method must pay)
  floor-ckpt     the same with the model's gradient checkpointing
  fast           the fast method (streaming, every statistic: mean/max/min, cosines)
  fast-ckpt      the same with --checkpointing
  fast-nocos     the fast method without cosines (whose T-by-width factors it keeps per matrix)
  fast-nocos-ckpt

    python benchmarks/bench_long.py                                  # 4096 tokens, all variants
    python benchmarks/bench_long.py --lengths 1024,2048 --variants floor,fast,fast-ckpt

Token ids are drawn at random below the vocabulary size (the numbers do not matter here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("floor", "floor-ckpt", "fast", "fast-ckpt", "fast-nocos", "fast-nocos-ckpt")
PROMPT_TOKENS = 64


class _Tokenizer:
    """Just what the engine's base-mode encoding uses: ids are the text's whitespace words."""

    pad_token_id = 0
    eos_token = "0"
    chat_template = None

    def __call__(self, text, add_special_tokens=True, **_):
        return {"input_ids": [int(word) for word in text.split()]}


def _peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(variant: str, length: int) -> dict[str, float | str]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from layerscope.analysis.base.records import ComputeSettings, Sample
    from layerscope.analysis.compute.engine import (
        compute_statistics,
        flush_subnormals_for_this_process,
    )
    from layerscope.analysis.models.loading import loaded_from_objects

    torch.set_num_threads(1)
    flush_subnormals_for_this_process()
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=30,
        hidden_size=576,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=max(8192, length),
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    loaded = loaded_from_objects(model, _Tokenizer(), "smollm2-135m-shape")
    ids = torch.randint(1, config.vocab_size, (length,)).tolist()
    sample = Sample(
        0,
        " ".join(map(str, ids[:PROMPT_TOKENS])),  # the "\n" between them adds no token here
        " ".join(map(str, ids[PROMPT_TOKENS:length])),
    )
    checkpointing = variant.endswith("-ckpt")
    settings = ComputeSettings(
        batch_size=1,
        max_length=length,
        cosines="nocos" not in variant,
        checkpointing=checkpointing,
    )
    base = _resident_bytes()
    with open("/proc/self/clear_refs", "w") as clear:  # Linux: reset VmHWM to the current RSS
        clear.write("5")
    began = time.perf_counter()
    cpu_began = _cpu_seconds()
    tokens = 0
    if variant.startswith("floor"):
        tokens = _floor(model, ids[:length], checkpointing)
    else:
        for batch in compute_statistics(loaded, [sample], settings):
            tokens += sum(r.prompt_tokens + r.response_tokens for r in batch.results)
    seconds = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu_began
    return {
        "variant": variant,
        "tokens": tokens,
        "above_model_mib": (_peak_bytes() - base) / 2**20,
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


def _cpu_seconds() -> float:
    """User and system time of this process: on a shared machine a steadier measure of the
    work than the wall clock (one thread, so it is the time an idle core would take)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _floor(model, ids: list[int], checkpointing: bool) -> int:
    """A frozen-weight forward and backward of the response loss, nothing captured."""
    import torch

    from layerscope.analysis.compute import model_state

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    handle = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: output.detach().requires_grad_(True)
    )
    input_ids = torch.tensor([ids])
    try:
        with model_state.checkpointing(model, checkpointing), torch.enable_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits[0]
            loss = torch.nn.functional.cross_entropy(
                logits[PROMPT_TOKENS - 1 : -1], input_ids[0, PROMPT_TOKENS:]
            )
            del logits
            loss.backward()
    finally:
        handle.remove()
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="4096", help="tokens per sample, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"# one sample, {PROMPT_TOKENS}-token prompt, SmolLM2-135M shape, float32, CPU, 1 thread")
    print(f"# load average before: {os.getloadavg()}")
    print(f"{'tokens':>6} {'variant':16} {'above model MiB':>15} {'wall s':>7} {'CPU s':>7}")
    for length in args.lengths.split(","):
        for variant in args.variants.split(","):
            command = [sys.executable, __file__, "--child", variant, length]
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, env=environment
            )
            if done.returncode != 0:
                print(f"{length:>6} {variant:16} failed: {done.stderr.strip()[-300:]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{result['tokens']:>6} {variant:16} {result['above_model_mib']:15.0f} "
                f"{result['seconds']:7.1f} {result['cpu_seconds']:7.1f}   "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
