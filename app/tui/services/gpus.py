"""How many GPUs the explorer's settings form offers to compute on.

Why a rule of the explorer's own: the form decides at start-up whether it offers "GPUs", from
the machine's count (:func:`layerscope.analysis.base.devices.visible_gpu_count`, which needs no
torch); ``$LAYERSCOPE_GPU_COUNT`` overrides that count, for tests and for a user who wants the
choice hidden (0) on a shared node.
"""

from __future__ import annotations

import os

from layerscope.analysis.base import devices
from layerscope.analysis.base.environment import integer_from_env

__all__ = ["GPU_COUNT_ENV", "visible_gpu_count"]

GPU_COUNT_ENV = "LAYERSCOPE_GPU_COUNT"


def visible_gpu_count() -> int:
    """The GPUs a computation here could use (see module docs)."""
    if os.environ.get(GPU_COUNT_ENV, "").strip():
        return integer_from_env(GPU_COUNT_ENV, 0, minimum=0)
    return devices.visible_gpu_count()
