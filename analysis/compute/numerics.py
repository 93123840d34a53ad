"""CPU arithmetic settings and timing of the engine's phases.

Why its own module: both matter for speed claims. Subnormal floats make CPU factorisations
several times slower unless flushed, more CPU threads than the cores a process really gets
(torch counts the cores it sees, not a cgroup quota or other processes' load) make a pass many
times slower still, and a phase split of GPU work is honest only when CUDA is synchronised at
the phase ends; the engine, the runner and the benchmarks share these.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from layerscope.analysis.base.environment import available_cpus

__all__ = [
    "PhaseTimer",
    "cpu_threads_for_this_process",
    "denormals_flushed",
    "flush_subnormals_for_this_process",
    "use_cpu_threads",
]


def flush_subnormals_for_this_process() -> bool:
    """Make this process's CPU arithmetic flush subnormal floats to zero from now on.

    Call it before torch does its first parallel work (before loading a model): torch's worker
    threads take the setting when they start, and a later call reaches only the calling
    thread. The CLI and the explorer's compute worker call it; library users may. Returns
    whether the CPU supports it. See ``denormals_flushed`` for why it matters.
    """
    import torch

    return bool(torch.set_flush_denormal(True))


def cpu_threads_for_this_process(
    requested: int | None, environ: Mapping[str, str] | None = None
) -> int:
    """The CPU threads torch should use: ``requested`` (``--cpu-threads``) when given, else
    :func:`~layerscope.analysis.base.environment.available_cpus` shared among the ranks a torchrun
    job starts on this machine (``LOCAL_WORLD_SIZE``), at least 1 each."""
    if requested is not None:
        return requested
    environ = os.environ if environ is None else environ
    text = environ.get("LOCAL_WORLD_SIZE", "").strip()  # torchrun's; checked by its own reader
    ranks_here = int(text) if text.isdigit() and int(text) > 0 else 1
    return max(1, available_cpus(environ=environ) // ranks_here)


def use_cpu_threads(requested: int | None) -> int:
    """Set torch's CPU threads for this process (see :func:`cpu_threads_for_this_process`);
    returns the number torch now uses.

    Call it when a computation starts, before the model is loaded: torch's worker threads take
    the count when they first work. Setting it again later (the explorer computes one request
    after another in one process) is allowed. The inter-op pool is sized too where torch still
    allows it (it refuses once any parallel work has run).
    """
    import torch

    threads = cpu_threads_for_this_process(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    return int(torch.get_num_threads())


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush subnormal floats to zero while the statistics are computed.

    The factorizations of gradient data produce intermediate values below float32's smallest
    normal number (1.2e-38), and x86 CPUs handle those in microcode, making QR and SVD several
    times slower (3.7x on the benchmark's 900-token samples). Flushing them changes results by
    far less than float32's own rounding (they are ~30 orders of magnitude below the entries).
    Affects CPU arithmetic only; turned off again afterwards (torch's default).
    """
    import torch

    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


class PhaseTimer:
    """Wall time per phase; synchronizes CUDA at phase ends so the split is honest.

    Kernels run asynchronously: without a synchronisation the forward and backward passes
    would seem to take microseconds and their time would land in the statistics phase (whose
    first ``.item()`` waits for them). Every visible CUDA device is synchronised, since a model
    split over several (a device map) runs kernels on each. ``cuda_module``: ``torch.cuda`` or a
    fake of its ``device_count``/``synchronize`` (tests).
    """

    def __init__(self, cuda: bool, cuda_module: Any = None) -> None:
        self.cuda = cuda
        self.cuda_module = cuda_module
        self.seconds = {"forward_backward": 0.0, "statistics": 0.0}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                self._synchronize()
            self.seconds[name] += time.perf_counter() - began

    def _synchronize(self) -> None:
        cuda = self.cuda_module
        if cuda is None:
            import torch

            cuda = torch.cuda
        for index in range(max(1, cuda.device_count())):
            cuda.synchronize(index)
