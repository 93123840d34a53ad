"""Formatting shared by widgets and screens: table numbers and length ranges.

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
