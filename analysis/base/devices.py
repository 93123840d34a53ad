"""The GPUs of this machine and ``CUDA_VISIBLE_DEVICES``, without importing torch.

Why without torch: the explorer offers the device before anything is computed and the CLI lists
devices in a blink; importing torch costs seconds and initialising CUDA more. NVIDIA's
management library (``pip install 'layerscope[gpu]'``, the ``nvidia-ml-py`` package, imported as
``pynvml``) answers in milliseconds. It is optional: without it GPUs are counted with
``nvidia-smi -L`` (or, where a check must not start a program, the NVIDIA device files), nothing
is listed with its memory, and what torch reports (memory in use) appears in the progress lines
once a computation starts.

Why one module: which GPUs a process sees is decided by ``CUDA_VISIBLE_DEVICES``, read by the
explorer's GPU count, the device list, the device check before a run and the torchrun ranks
(which also narrow it to a replica's GPUs). Read in one place it is read one way, the way CUDA
reads it: entries up to the first one that is not a GPU (an empty entry or ``-1`` hides it and
every later one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GIB",
    "VISIBLE_DEVICES",
    "GpuInfo",
    "device_file_gpu_count",
    "list_gpus",
    "node_gpus",
    "nvml_available",
    "parse_visible_devices",
    "show_only",
    "visible_entries",
    "visible_gpu_count",
]

GIB = 1024**3
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


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


# ---- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------


def parse_visible_devices(text: str) -> list[str]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` value shows, in the order torch numbers them.

    Entries are driver indices or GPU/MIG UUIDs; the list ends at the first entry that is
    neither (an empty one, ``-1``), as CUDA ends it: ``"1,-1,2"`` shows GPU 1 alone and ``""``
    none.
    """
    entries = []
    for part in text.split(","):
        entry = part.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def visible_entries(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` in ``environ`` (``os.environ``) shows; None when unset
    (every GPU is visible)."""
    listed = (os.environ if environ is None else environ).get(VISIBLE_DEVICES)
    return None if listed is None else parse_visible_devices(listed)


def _visible_count(found: int, environ: Mapping[str, str] | None = None) -> int:
    """Of ``found`` GPUs on the machine, how many ``CUDA_VISIBLE_DEVICES`` leaves visible."""
    entries = visible_entries(environ)
    return found if entries is None else min(found, len(entries))


def _visible_indices(indices: list[int]) -> list[int]:
    """The driver's indices that torch will see, in torch's order (``CUDA_VISIBLE_DEVICES``).

    UUIDs cannot be matched to indices without asking the driver again: the list stops there.
    """
    entries = visible_entries()
    if entries is None:
        return indices
    chosen = []
    for entry in entries:
        if not entry.isdigit():
            break
        if int(entry) in indices:
            chosen.append(int(entry))
    return chosen


def show_only(entries: Sequence[str], environ: MutableMapping[str, str] | None = None) -> None:
    """Let a process (and the programs it starts) see only ``entries`` of the GPUs it sees now:
    what a launcher sets before torch initialises CUDA; torch then numbers them from 0."""
    (os.environ if environ is None else environ)[VISIBLE_DEVICES] = ",".join(entries)


# ---- counting ---------------------------------------------------------------------------------


def _device_files_present() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0"))


def _device_file_count() -> int:
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())


def device_file_gpu_count(environ: Mapping[str, str] | None = None) -> int:
    """The GPUs the NVIDIA device files (``/dev/nvidia0``, ...) show, as many as
    ``CUDA_VISIBLE_DEVICES`` leaves visible; 0 without the driver's files.

    Starts no program and loads no library: what a check before any cache look-up can afford.
    """
    if not _device_files_present():
        return 0
    return _visible_count(_device_file_count(), environ)


def node_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs a process here sees, as entries for ``CUDA_VISIBLE_DEVICES``: what that
    variable lists, else every GPU the device files show (``0`` to ``n-1``)."""
    entries = visible_entries(environ)
    if entries is not None:
        return entries
    return [str(i) for i in range(device_file_gpu_count(environ))]


def _library_count(nvml: Any = None) -> int | None:
    """The driver's GPU count through NVML; None without nvidia-ml-py."""
    nvml = nvml or _import_nvml()
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
        try:
            return int(nvml.nvmlDeviceGetCount())
        finally:
            nvml.nvmlShutdown()
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
    """The GPUs a computation here could use: NVML's count (else ``nvidia-smi -L``'s), as many
    as ``CUDA_VISIBLE_DEVICES`` leaves visible."""
    found = _library_count()
    if found is None:
        found = _smi_count()
    return _visible_count(found)


# ---- listing ----------------------------------------------------------------------------------


def _import_nvml() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
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
        indices = _visible_indices(indices)
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
