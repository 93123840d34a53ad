"""Reading layerscope's environment variables: one typed reader each, one kind of error.

Why one module: a variable is set once in a shell profile and read much later, deep inside the
package (the cache's lock timeout at every open, its block size when a file is created). A bad
value used to come out in Python's own words ("could not convert string to float: 'abc'"),
naming nothing, or to crash the import of the cache. Every ``LAYERSCOPE_*`` variable is read
through here, when it is used, so a bad one is one line that names the variable, its value and
what it may be (:class:`EnvironmentVariableError`, a ``ValueError``), and ``layerscope doctor``
can check them all by calling the same readers. ``LAYERSCOPE_DEBUG`` is a flag read by the
command line itself: any non-empty value means yes, so there is nothing to get wrong.

:func:`available_cpus` reads the process's share of the machine (its CPU affinity, its cgroup's
CPU quota and ``OMP_NUM_THREADS``): the default of ``--cpu-threads``. Torch's own default counts
the cores it sees, not a container's CPU quota, and its spinning worker threads then fight over
the few cores the process actually gets.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from layerscope.analysis.base.errors import LayerscopeError

__all__ = [
    "CGROUP_ROOT",
    "EnvironmentVariableError",
    "available_cpus",
    "integer_from_env",
    "number_from_env",
    "size_from_env",
    "text_from_env",
]


class EnvironmentVariableError(LayerscopeError, ValueError):
    """An environment variable holds a value layerscope cannot use; one line naming it."""

    def __init__(self, name: str, value: str, allowed: str) -> None:
        super().__init__(
            f"environment variable {name}={value!r} is not valid: expected {allowed}; "
            "fix or unset it"
        )
        self.name = name
        self.value = value


def text_from_env(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def number_from_env(
    name: str, default: float, *, minimum: float | None = None, unit: str = ""
) -> float:
    """A finite number (``unit`` names what it counts, e.g. "seconds"), at least ``minimum``."""
    text = text_from_env(name)
    if text is None:
        return default
    allowed = f"a number{' of ' + unit if unit else ''}"
    if minimum is not None:
        allowed += f", at least {minimum:g}"
    allowed += f" (default {default:g})"
    try:
        value = float(text)
    except ValueError:
        raise EnvironmentVariableError(name, text, allowed) from None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise EnvironmentVariableError(name, text, allowed)
    return value


def integer_from_env(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    power_of_two: bool = False,
) -> int:
    """An integer between ``minimum`` and ``maximum``, a power of two if asked."""
    text = text_from_env(name)
    if text is None:
        return default
    allowed = "a power of two" if power_of_two else "an integer"
    if minimum is not None and maximum is not None:
        allowed += f" from {minimum} to {maximum}"
    elif minimum is not None:
        allowed += f", at least {minimum}"
    allowed += f" (default {default})"
    try:
        value = int(text)
    except ValueError:
        raise EnvironmentVariableError(name, text, allowed) from None
    if (
        (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (power_of_two and (value < 1 or value & (value - 1)))
    ):
        raise EnvironmentVariableError(name, text, allowed)
    return value


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def size_from_env(name: str, default: str) -> int:
    """A size in bytes: a number with an optional unit (``8MB``, ``512KiB``, ``1GB``, ``4096``)."""
    text = text_from_env(name) or default
    match = _SIZE.fullmatch(text.strip())
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise EnvironmentVariableError(
            name, text, f"a size such as 8MB, 512KiB or 1GB (default {default})"
        )
    return int(float(match.group(1)) * unit)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, environ: Mapping[str, str] | None = None
) -> int:
    """How many CPU threads this process should compute with: at least 1.

    The smallest of: the CPUs the scheduler lets it run on (``os.sched_getaffinity``, else
    ``os.cpu_count()``), its cgroup's CPU quota rounded up (cgroup v2 ``cpu.max``, or v1
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``, read under ``cgroup_root``) and
    ``OMP_NUM_THREADS`` when set (OpenMP's list form ``4,2`` counts its first level). An
    ``OMP_NUM_THREADS`` that is not a positive integer raises EnvironmentVariableError.
    """
    environ = os.environ if environ is None else environ
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        count = min(count, quota)
    text = environ.get("OMP_NUM_THREADS", "").strip()
    if text:
        first = text.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise EnvironmentVariableError(
                "OMP_NUM_THREADS", text, "a positive integer (the CPU threads torch may use)"
            )
        count = min(count, int(first))
    return max(1, count)


def _cgroup_quota(root: Path) -> int | None:
    """The CPUs the cgroup's quota allows (rounded up), or None without a quota or a file."""
    try:  # cgroup v2: "QUOTA PERIOD", or "max PERIOD" for no limit
        quota_text, period_text = (root / "cpu.max").read_text().split()[:2]
        return _cpus(quota_text, period_text)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # cgroup v1: -1 for no limit
        try:
            quota_text = (root / folder / "cpu.cfs_quota_us").read_text().strip()
            period_text = (root / folder / "cpu.cfs_period_us").read_text().strip()
            return _cpus(quota_text, period_text)
        except (OSError, ValueError):
            continue
    return None


def _cpus(quota_text: str, period_text: str) -> int | None:
    if quota_text == "max":
        return None
    quota, period = int(quota_text), int(period_text)  # ValueError: not a quota file
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))
