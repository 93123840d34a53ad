"""Which samples go into one forward and backward pass, and how many tokens a pass may hold.

Why batches by length: a right-padded batch costs its longest sample times its rows. A dataset
mixes one-line answers with detailed chains of thought, and in file order a 40-token answer is
padded to the 1,000 tokens of its neighbour; sorted by length, samples of similar length share
a batch and little is padding. Why a token budget instead of a fixed row count: what fits in
memory is rows x tokens, so a budget lets many short samples share a pass and keeps a pass of
long ones small. ``batch_size`` stays a cap on the rows (and so on the memory that per-row
work, the statistics of each sample, holds at once).

The budget's default comes from the memory the device has free: on CUDA,
``torch.cuda.mem_get_info`` (plus what torch's allocator keeps cached) against an estimate of
the memory one token holds through the forward and backward passes, from the model's config
(hidden size, intermediate size, layers, vocabulary, dtype); on a CPU a fixed budget (the old
default of 4 rows of 1,024 tokens). The estimate is deliberately generous; when a pass runs out
of memory anyway the engine halves it and retries.

Also here: what a device has in use (for progress lines), the CUDA queries the engine and the
runner share, all with torch imported lazily and every query fakeable in tests.

Headless and near the bottom of the layers: plain numbers in, plain numbers out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CPU_TOKENS_PER_BATCH",
    "MAX_TOKENS_PER_BATCH",
    "MIN_TOKENS_PER_BATCH",
    "MemoryInUse",
    "bytes_per_token",
    "cuda_available_bytes",
    "default_tokens_per_batch",
    "formed_gradients_budget",
    "memory_in_use",
    "plan_batches",
]

# 4 rows of 1,024 tokens: what the CPU default was before budgets (batch size 4, max length).
CPU_TOKENS_PER_BATCH = 4096
MIN_TOKENS_PER_BATCH = 512
MAX_TOKENS_PER_BATCH = 1 << 18
# The fraction of the free memory a pass may plan to use: the estimate ignores the statistics'
# own work (factorisations per sample) and allocator fragmentation.
MEMORY_FRACTION = 0.5


def plan_batches(
    lengths: Sequence[int], tokens_per_batch: int, max_rows: int | None = None
) -> list[list[int]]:
    """Positions into ``lengths`` grouped into batches of samples of similar length.

    Sorted by length (ties keep their order), a batch is filled while its longest sample times
    its rows stays within ``tokens_per_batch`` (and its rows within ``max_rows``); every batch
    holds at least one sample, so a sample longer than the budget gets a batch of its own. The
    positions inside a batch are ascending, and batches come in the order of their first
    position, so progress follows the file as far as it can and a batch size of 1 keeps the
    file's order exactly. Each position appears exactly once.
    """
    if tokens_per_batch < 1:
        raise ValueError(f"tokens per batch must be at least 1, got {tokens_per_batch}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"rows per batch must be at least 1, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for position in order:
        length = max(1, lengths[position])
        rows = len(current) + 1
        widest = max(longest, length)
        full = max_rows is not None and rows > max_rows
        if current and (full or widest * rows > tokens_per_batch):
            batches.append(current)
            current, widest = [], length
        current.append(position)
        longest = widest
    if current:
        batches.append(current)
    return sorted((sorted(batch) for batch in batches), key=lambda batch: batch[0])


def _config_value(config: Any, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def bytes_per_token(config: Any, element_bytes: int) -> int:
    """An upper estimate of the memory one token holds through a frozen-weight forward and
    backward pass with the gradient factors captured.

    Per layer, the activations autograd keeps (normalised inputs, q/k/v/o, the MLP's gate, up
    and activation) and the captured inputs and output gradients of every target: about
    12 x hidden + 6 x intermediate elements in the model's dtype. Per token once, the logits in
    the model's dtype plus their float32 copy and its gradient (the loss is taken in float32).
    Attention scores are not counted (SDPA kernels do not keep them; the eager path does, and a
    pass that runs out of memory is halved).
    """
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model", default=4096)
    layers = _config_value(config, "num_hidden_layers", "n_layer", "num_layers", default=32)
    intermediate = _config_value(
        config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden
    )
    vocab = _config_value(config, "vocab_size", default=32000)
    per_layer = (12 * hidden + 6 * intermediate) * element_bytes
    return layers * per_layer + vocab * (element_bytes + 8)


def cuda_available_bytes(device: Any, cuda: Any = None) -> int:
    """Memory a new pass can use on a CUDA device: the driver's free memory plus what torch's
    caching allocator holds but does not use (it hands that out first). ``cuda``: the
    ``torch.cuda`` module, or a fake of its ``mem_get_info``/``memory_reserved``/
    ``memory_allocated``."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    free, _total = cuda.mem_get_info(device)
    cached = cuda.memory_reserved(device) - cuda.memory_allocated(device)
    return int(free) + max(0, int(cached))


def default_tokens_per_batch(
    device: Any,
    config: Any,
    element_bytes: int,
    available: Callable[[Any], int] | None = None,
) -> int:
    """The token budget a pass gets when none is asked for (see the module's docs).

    ``device``: a torch.device (or anything with ``.type``); ``available``: bytes free on a
    CUDA device (default :func:`cuda_available_bytes`; tests pass a fake).
    """
    if getattr(device, "type", str(device)) != "cuda":
        return CPU_TOKENS_PER_BATCH
    free = (available or cuda_available_bytes)(device)
    budget = int(free * MEMORY_FRACTION) // max(1, bytes_per_token(config, element_bytes))
    return max(MIN_TOKENS_PER_BATCH, min(MAX_TOKENS_PER_BATCH, budget))


# The fraction of the free memory that the formed cosine route may keep in gradients (see
# routes.py): L x rows x cols per projection and sample, e.g. 106 MB for a 135M model's 30
# layers of q, k, v and o, 5.4 GB for a 7B model's 32.
FORMED_MEMORY_FRACTION = 0.25
HOST_MEMORY_FALLBACK = 8 << 30


def formed_gradients_budget(device: Any, available: Callable[[Any], int] | None = None) -> int:
    """Bytes a batch may keep in formed gradients: a quarter of the device's free memory (on
    CUDA as :func:`cuda_available_bytes` counts it, on a CPU the host's available memory)."""
    if getattr(device, "type", str(device)) == "cuda":
        free = (available or cuda_available_bytes)(device)
    else:
        free = (available or _host_available_bytes)(device)
    return int(free * FORMED_MEMORY_FRACTION)


def _host_available_bytes(_device: Any = None) -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return HOST_MEMORY_FALLBACK


@dataclass(frozen=True)
class MemoryInUse:
    """Memory a computation holds on its device now and at most so far, in bytes.

    ``kind``: "cuda" (torch's allocated tensors on the device) or "rss" (the whole process's
    resident memory on a CPU; its peak is the process's, not only the run's).
    """

    kind: str
    current: int
    peak: int


def memory_in_use(device: Any, cuda: Any = None) -> MemoryInUse | None:
    """What the device running a computation has in use (None where it cannot be told).

    CUDA: ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` of the device (``cuda``:
    the torch.cuda module or a fake). CPU: the process's resident set (Linux ``/proc``) and its
    peak (``getrusage``). Other devices: None.
    """
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        if cuda is None:
            import torch

            cuda = torch.cuda
        return MemoryInUse(
            "cuda", int(cuda.memory_allocated(device)), int(cuda.max_memory_allocated(device))
        )
    if kind != "cpu":
        return None
    return _process_memory()


def _process_memory() -> MemoryInUse | None:
    import os

    try:
        import resource

        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError, IndexError, ImportError):
        return None
    current = resident_pages * os.sysconf("SC_PAGE_SIZE")
    return MemoryInUse("rss", current, max(current, peak_kib * 1024))
