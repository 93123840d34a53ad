"""A radio button whose selected and unselected states differ by glyph, not only by colour.

Textual's RadioButton draws `▐●▌` whether it is on or off, the state shown by a low-contrast
colour alone, which is lost without colour. Here the selected button shows `●` and the others
`○`, so `▐●▌ base  ▐○▌ instruct` reads in any terminal; keys and clicks are RadioButton's own.
"""

from __future__ import annotations

from textual.content import Content
from textual.style import Style
from textual.widgets import RadioButton

SELECTED = "●"
UNSELECTED = "○"


class MarkedRadioButton(RadioButton):
    """RadioButton with `●` when selected and `○` when not."""

    @property
    def _button(self) -> Content:
        # ToggleButton._button with the inner glyph chosen by the value.
        button_style = self.get_visual_style("toggle--button")
        side_style = Style(foreground=button_style.background, background=self.background_colors[1])
        return Content.assemble(
            (self.BUTTON_LEFT, side_style),
            (SELECTED if self.value else UNSELECTED, button_style),
            (self.BUTTON_RIGHT, side_style),
        )
