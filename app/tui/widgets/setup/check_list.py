"""A selection list whose checked and unchecked boxes differ by glyph, not only by colour.

Textual's SelectionList draws every box as `▐X▌` and tells checked from unchecked by the box's
colour alone, a low-contrast one that is lost without colour (NO_COLOR, tmux without 256
colours, a screenshot in a note). Here a checked box shows `✓` and an unchecked one a blank,
so `▐✓▌ none_cot` and `▐ ▌ simplified_cot` read apart in any terminal; keys and clicks are
SelectionList's own.
"""

from __future__ import annotations

from typing import TypeVar

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets.option_list import OptionDoesNotExist

CHECKED = "✓"
UNCHECKED = " "

SelectionType = TypeVar("SelectionType")


class CheckList(SelectionList[SelectionType]):
    """SelectionList with `✓` in a checked box and a blank in an unchecked one."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        _, scroll_y = self.scroll_offset
        try:
            selection = self.get_option_at_index(scroll_y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if len(segments) < 2:
            return strip
        # SelectionList's line starts with the box: left side, inner glyph, right side.
        glyph = CHECKED if selection.value in self.selected else UNCHECKED
        inner = segments[1]
        segments[1] = Segment(glyph, inner.style, inner.control)
        return Strip(segments, strip.cell_length)
