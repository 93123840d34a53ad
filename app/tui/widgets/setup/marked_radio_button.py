"""A radio button whose selected and unselected states differ by glyph, not only by colour.

Textual's RadioButton draws `▐●▌` whether it is on or off, the state shown by a low-contrast
colour alone, which is lost without colour. Here the selected button shows `●` and the others
`○`, so `▐●▌ base  ▐○▌ instruct` reads in any terminal; keys and clicks are RadioButton's own.
"""

from __future__ import annotations

from textual.widgets import RadioButton

SELECTED = "●"
UNSELECTED = "○"


class MarkedRadioButton(RadioButton):
    """RadioButton with `●` when selected and `○` when not."""

    # Textual's class attribute for the glyph inside the box, read each time the button is drawn;
    # a property here, so that the glyph follows the value.
    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        """`●` when selected, `○` when not."""
        return SELECTED if self.value else UNSELECTED
