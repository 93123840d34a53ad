"""Reading layerscope's environment variables: one typed reader each, one kind of error.

Why one module: a variable is set once in a shell profile and read much later, deep inside the
package (the cache's lock timeout at every open, its block size when a file is created). A bad
value used to come out in Python's own words ("could not convert string to float: 'abc'"),
naming nothing, or to crash the import of the cache. Every ``LAYERSCOPE_*`` variable is read
through here, when it is used, so a bad one is one line that names the variable, its value and
what it may be (:class:`EnvironmentVariableError`, a ``ValueError``), and ``layerscope doctor``
can check them all by calling the same readers. ``LAYERSCOPE_DEBUG`` is a flag read by the
command line itself: any non-empty value means yes, so there is nothing to get wrong.
"""

from __future__ import annotations

import math
import os
import re

__all__ = [
    "EnvironmentVariableError",
    "integer_from_env",
    "number_from_env",
    "size_from_env",
    "text_from_env",
]


class EnvironmentVariableError(ValueError):
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
