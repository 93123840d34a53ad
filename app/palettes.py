"""The colours and marker glyphs of every text chart: the CLI's and the explorer's.

Why one module: ``layerscope show`` and the explorer draw the same kinds of chart with plotext,
and a series should look the same in both; two copies of a palette drift apart. Colour is lost
often (tmux without 256 colours, plain SSH, ``NO_COLOR``, a log file, a colour-blind reader), so
every series also has its own marker glyph, with colour or without, and a legend pairs the glyph
with the label. Colours are plotext's names of the base ANSI colours (codes 0-15), readable in
any terminal; :func:`rich_colour` gives the style rich needs for a legend drawn outside plotext.
Nothing here imports plotext, rich or Textual.
"""

from __future__ import annotations

__all__ = [
    "BAND_MARKERS",
    "RUN_COLOURS_DARK",
    "RUN_COLOURS_LIGHT",
    "RUN_MARKERS",
    "SERIES_COLOURS",
    "SERIES_MARKERS",
    "rich_colour",
    "run_colours",
]

# Series in legend order (the CLI's charts, the explorer's spectra, one per layer): distinct on
# dark and light terminals alike.
SERIES_COLOURS = ("red", "green", "blue", "orange", "magenta", "cyan", "gray", "yellow")
SERIES_MARKERS = ("•", "+", "x", "o", "*", "#", "@", "%")

# Runs overlaid in the explorer's chart, which knows its theme: the bright colours on a dark one.
RUN_COLOURS_DARK = ("blue+", "red+", "green+", "magenta+", "cyan+", "orange+", "gray+", "white")
RUN_COLOURS_LIGHT = ("blue", "red", "green", "magenta", "cyan", "orange", "gray", "black")
# The first run keeps braille (the finest line); the others are drawn with one character each,
# which the legend shows in front of the run's name.
RUN_MARKERS = ("braille", "•", "x", "+", "*", "o", "#", "%")
# The edges of each run's 95% CI band, in the same order: without colour (NO_COLOR) the bands of
# different runs were the same dots; the legend names each run's band character.
BAND_MARKERS = ("·", "'", ",", ":", ";", "`", "^", "~")

# plotext's base ANSI colour names and their codes 0-15.
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


def run_colours(dark: bool) -> tuple[str, ...]:
    """The colours of overlaid runs on a dark or a light theme."""
    return RUN_COLOURS_DARK if dark else RUN_COLOURS_LIGHT


def rich_colour(plotext_colour: str) -> str:
    """The rich style colour of a plotext palette colour (for legends in tables)."""
    return f"color({_ANSI_CODES.get(plotext_colour, 7)})"
