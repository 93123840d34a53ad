"""Formatting shared by widgets and screens: table numbers, legend colours, length ranges.

Why a module of its own: these small rules used to live inside a widget (comparison_table,
layer_chart) or a screen (length_filter), so a screen importing a number format pulled in a
widget and a widget showing a length range pulled in a screen. Here they have no Textual or
plotext dependency at all, and both sides import them without importing each other.
"""

from __future__ import annotations

import math

UNBOUNDED = 1_000_000_000

# plotext's base ANSI colour names and their codes 0-15 (see layer_chart's palettes).
_ANSI_CODES = {
    "black": 0,
    "red": 1,
    "green": 2,
    "orange": 3,
    "blue": 4,
    "magenta": 5,
    "cyan": 6,
    "white": 7,
    "gray": 8,
    "red+": 9,
    "green+": 10,
    "orange+": 11,
    "blue+": 12,
    "magenta+": 13,
    "cyan+": 14,
    "gray+": 15,
}


def number(value: float, digits: int = 4) -> str:
    """A compact number for a table cell: 4 significant digits, '-' when not finite."""
    if value is None or not math.isfinite(value):
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def rich_colour(plotext_colour: str) -> str:
    """The rich style colour of a plotext palette colour (for legends in tables)."""
    return f"color({_ANSI_CODES.get(plotext_colour, 7)})"


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
