"""Formatting shared by widgets and screens: table numbers, length ranges, ETAs and rates.

Why a module of its own: these small rules used to live inside a widget (comparison_table)
or a screen (length_filter), so a screen importing a number format pulled in a
widget and a widget showing a length range pulled in a screen. Here they have no Textual or
plotext dependency at all, and both sides import them without importing each other.
"""

from __future__ import annotations

import math

UNBOUNDED = 1_000_000_000


def number(value: float, digits: int = 4) -> str:
    """A compact number for a table cell: 4 significant digits, '-' when not finite."""
    if value is None or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def parse_length_range(text: str) -> tuple[int, int] | None:
    """'50-200' -> (50, 200); '100-' and '-80' are open-ended; '' -> None. Raises ValueError."""
    text = text.strip().replace(" ", "")
    if not text:
        return None
    low_text, separator, high_text = text.partition("-")
    if not separator:
        raise ValueError(f"{text!r}: write a range like 50-200, 100- or -80")
    try:
        low = int(low_text) if low_text else 0
        high = int(high_text) if high_text else UNBOUNDED
    except ValueError:
        raise ValueError(f"{text!r}: the bounds must be whole numbers of tokens") from None
    if low < 0 or high < low:
        raise ValueError(f"{text!r}: the range is empty")
    return (low, high)


def format_length_range(value: tuple[int, int] | None) -> str:
    """The inverse of parse_length_range ('' for no filter)."""
    if value is None:
        return ""
    low, high = value
    return f"{low if low else ''}-{high if high < UNBOUNDED else ''}"


def format_duration(seconds: float | None) -> str:
    """12s, 3m04s, 1h02m: an ETA that reads at a glance."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def sample_rate(samples_per_second: float) -> str:
    """'3.1/s', '12/s', or '1.5/min' for a run slower than one sample every ten seconds."""
    if samples_per_second < 0.1:
        return f"{samples_per_second * 60:.1f}/min"
    if samples_per_second >= 10:
        return f"{samples_per_second:.0f}/s"
    return f"{samples_per_second:.1f}/s"
