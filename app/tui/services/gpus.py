"""How many GPUs this machine shows, without importing torch.

Why torch-free: the explorer decides at start-up whether its settings form offers "GPUs", and
importing torch takes seconds. NVIDIA's management library (``nvidia-ml-py``) answers when it
is installed; otherwise ``nvidia-smi -L`` does; ``CUDA_VISIBLE_DEVICES`` limits either, as it
limits what torch would see. ``$LAYERSCOPE_GPU_COUNT`` overrides all of them, for tests and for
a user who wants the choice hidden (0) on a shared node.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from layerscope.analysis.environment import integer_from_env

__all__ = ["GPU_COUNT_ENV", "visible_gpu_count"]

GPU_COUNT_ENV = "LAYERSCOPE_GPU_COUNT"


def _library_count() -> int | None:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no permission: no GPUs to offer
        return 0


def _smi_count() -> int:
    program = shutil.which("nvidia-smi")
    if program is None:
        return 0
    try:
        listed = subprocess.run(
            [program, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def visible_gpu_count() -> int:
    """The GPUs a computation here could use (see module docs)."""
    if os.environ.get(GPU_COUNT_ENV, "").strip():
        return integer_from_env(GPU_COUNT_ENV, 0, minimum=0)
    found = _library_count()
    if found is None:
        found = _smi_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        listed = [part for part in visible.split(",") if part.strip()]
        # an invalid entry hides it and every later one, as CUDA does
        valid = 0
        for part in listed:
            if part.strip().startswith("-"):
                break
            valid += 1
        found = min(found, valid)
    return found
