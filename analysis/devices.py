"""The GPUs of this machine with their free memory, without importing torch.

Why without torch: the explorer offers the device before anything is computed and the CLI lists
devices in a blink; importing torch costs seconds and initialising CUDA more. NVIDIA's
management library (``pip install 'layerscope[gpu]'``, the ``nvidia-ml-py`` package, imported as
``pynvml``) answers in milliseconds. It is optional: without it nothing is listed here, and what
torch reports (memory in use) appears in the progress lines once a computation starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = ["GIB", "GpuInfo", "list_gpus", "nvml_available"]

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver reports it."""

    index: int
    name: str
    free_bytes: int
    total_bytes: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def describe(self) -> str:
        """'NVIDIA H200, free 130.2 GiB of 139.8 GiB'."""
        return (
            f"{self.name}, free {self.free_bytes / GIB:.1f} GiB of {self.total_bytes / GIB:.1f} GiB"
        )


def _import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def nvml_available(nvml: Any = None) -> bool:
    """Whether the optional NVIDIA management library is installed."""
    return (nvml or _import_nvml()) is not None


def list_gpus(nvml: Any = None) -> list[GpuInfo]:
    """The NVIDIA GPUs with free and total memory; [] without nvidia-ml-py, a driver or a GPU.

    ``nvml``: the ``pynvml`` module or a fake of ``nvmlInit``, ``nvmlShutdown``,
    ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetName`` and
    ``nvmlDeviceGetMemoryInfo`` (tests pass one). Indices are the driver's; with
    ``CUDA_VISIBLE_DEVICES`` set torch numbers the visible ones from 0, so the list follows it.
    """
    nvml = nvml or _import_nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no GPU: the library raises its own NVMLError
        return []
    try:
        indices = list(range(nvml.nvmlDeviceGetCount()))
        indices = _visible(indices)
        gpus = []
        for position, index in enumerate(indices):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(position, str(name), int(memory.free), int(memory.total)))
        return gpus
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _visible(indices: list[int]) -> list[int]:
    """The driver's indices that torch will see, in torch's order (``CUDA_VISIBLE_DEVICES``)."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return indices
    chosen = []
    for part in visible.split(","):
        part = part.strip()
        if not part.isdigit():  # UUIDs or an empty value: stop where torch would
            break
        if int(part) in indices:
            chosen.append(int(part))
    return chosen
