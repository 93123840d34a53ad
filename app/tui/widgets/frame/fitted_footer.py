"""A footer that shows whole key entries only: what does not fit is hidden, not cut.

Textual's compact Footer lays every binding out in one scrollable row and docks the command
palette key over its right end. Two things went wrong at 80 columns. The compact style gives
every key, the docked palette key included, a right margin of one column, so the last column of
the screen showed whatever of the row lay under it: the stray letters after `palette`
("palettee", "paletteC"). And the row, longer than the screen, was cut in the middle of an entry
("c Canc") by the palette key. Here the palette key has no margin (it ends at the screen's
edge), and every entry (a key, or a group of keys with its label) that would reach under it is
made invisible, keeping its place, so the row shows whole entries only; the hidden keys still
work, and help (?), which leads the row so that it is never the one hidden, and the command
palette list them all.
"""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Footer

from layerscope.app.compat.textual import FooterKey, FooterLabel, KeyGroup


class FittedFooter(Footer):
    """Footer(compact=True) whose entries are all whole: those that do not fit are hidden."""

    DEFAULT_CSS = """
    FittedFooter.-compact FooterKey.-command-palette {
        margin-right: 0;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, compact=True)

    async def recompose(self) -> None:
        if self.is_attached and self.screen is not self.app.screen:
            # Under a dialog this screen is not laid out again, so the new row could not be
            # fitted (it showed cut entries, "r R", beside the palette key): keep the fitted
            # one; the row is composed again when the screen is on top once more.
            return
        await super().recompose()
        self._help_first()
        self.call_after_refresh(self.fit_entries)

    def _help_first(self) -> None:
        """The help key leads the row: what cannot fit is hidden, and help is what tells the
        hidden keys (the focused widget's first, then the app's)."""
        keys = [c for c in self.children if isinstance(c, FooterKey) and c.action == "help"]
        if keys and self.children and self.children[0] is not keys[0]:
            self.move_child(keys[0], before=0)

    def on_resize(self) -> None:
        self.call_after_refresh(self.fit_entries)

    def _entries(self) -> tuple[list[list[Widget]], Widget | None]:
        """The row's entries in order (a key group travels with its label), and the palette key."""
        entries: list[list[Widget]] = []
        palette: Widget | None = None
        for child in self.children:
            if child.has_class("-command-palette"):
                palette = child
            elif (
                isinstance(child, FooterLabel) and entries and isinstance(entries[-1][0], KeyGroup)
            ):
                entries[-1].append(child)
            elif isinstance(child, FooterKey | KeyGroup | FooterLabel):
                entries.append([child])
        return entries, palette

    def fit_entries(self) -> None:
        """Hide every entry from the first one that would reach under the palette key or past
        the right edge; show the rest."""
        if not self.is_attached:
            return
        entries, palette = self._entries()
        right = palette.region.x if palette is not None and palette.region else self.region.right
        fits = True
        for entry in entries:
            fits = fits and all(widget.region.right <= right for widget in entry)
            for widget in entry:
                widget.visible = fits
