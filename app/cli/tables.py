"""The command line's tables: plain strings laid out to fit the terminal, drawn line by line.

Why not Rich's ``Table``: it measures and renders every cell through its text pipeline, about
half a millisecond a cell, so ``runs`` of a study's 300 runs spent 0.16 s of CPU drawing 2,700
short strings, more than reading them. The cells here are plain text (ids, names, numbers),
never markup: a dataset called ``[math]`` prints as it is. The widths are decided once for the
whole table, and each line is one string; Rich only writes the lines and styles the title
(wrapped at spaces, a path in it never cut).

Why records: ids and response types are never cut (a user copies them), so a table whose whole
columns cannot fit the terminal, or fit only by folding the others a letter or two a line, is
written one row per block instead, a ``name  value`` line per column (as psql's expanded
display). A value wider than the terminal is written whole on its line for the terminal to
wrap, so print these tables with ``crop=False`` (Rich would cut such a line at the width).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way when the terminal is narrow.

    ``whole``: never cut nor folded (ids a user copies, names that differ only at their end,
    such as ``none_cot`` and ``none_cot_irrelevant``, numbers); other columns fold onto more
    lines. ``drop``: the column may be left out when the table does not fit, lowest first.
    ``justify``: ``left``, ``right`` or ``center``.
    """

    name: str
    justify: str = "left"
    whole: bool = False
    drop: int | None = None


# A bordered table spends 3 characters per column (two of padding, one rule) and one more.
_BORDERED = (3, 1)
# Without outer edges and their padding: 3 per gap between columns.
_COMPACT = (3, -3)
# A column that folds keeps at least this many cells (or its natural width, or its header's
# longest word): narrower, a name or a status reads a letter or two a line.
FOLD_FLOOR = 8
# Between a record's names and its values.
_RECORD_GAP = 2


def fold(text: str, width: int, *, cut: bool = True) -> list[str]:
    """``text`` in lines of at most ``width`` cells: its own lines, wrapped at spaces, and words
    longer than the width cut (nothing is lost), or with ``cut=False`` left whole on a line of
    their own (a path, an id, a run's label)."""
    from rich.cells import cell_len, chop_cells

    lines: list[str] = []
    for line in text.split("\n"):
        if cell_len(line) <= width:
            lines.append(line)
            continue
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if cell_len(candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            pieces = chop_cells(word, width) if cut and cell_len(word) > width else [word]
            lines.extend(pieces[:-1])
            current = pieces[-1]
        lines.append(current)
    return lines


def _aligned(text: str, width: int, justify: str) -> str:
    from rich.cells import cell_len

    space = width - cell_len(text)
    if justify == "right":
        return " " * space + text
    if justify == "center":
        return " " * (space // 2) + text + " " * (space - space // 2)
    return text + " " * space


class FittedTable:
    """Rows of plain strings under a title, with the widths :func:`fitted_table` chose."""

    def __init__(
        self,
        title: str,
        columns: Sequence[Column],
        rows: Iterable[Sequence[str]],
        widths: Sequence[int],
        compact: bool,
        records: int | None = None,
    ) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows = [list(row) for row in rows]
        self.widths = list(widths)
        self.compact = compact
        # The width the rows are written in as records, one block each; None: as a table.
        self.records = records

    @property
    def width(self) -> int:
        if self.records is not None:
            return self.records
        style = _COMPACT if self.compact else _BORDERED
        return sum(self.widths) + style[0] * len(self.widths) + style[1]

    def _record_lines(self, cells: Sequence[str]) -> Iterator[tuple[str, str]]:
        """One row as a record: (name, text) per line, the name on its first line only. Whole
        values stay on one line however long; the others fold to the width left, unless it is
        narrower than :data:`FOLD_FLOOR` (the terminal wraps them then)."""
        from rich.cells import cell_len

        indent = max(cell_len(c.name) for c in self.columns) + _RECORD_GAP
        room = (self.records or 0) - indent
        for column, cell in zip(self.columns, cells, strict=True):
            whole = column.whole or room < FOLD_FLOOR
            lines = cell.split("\n") if whole else fold(cell, room)
            for n, line in enumerate(lines):
                name = column.name if n == 0 else ""
                yield name + " " * (indent - cell_len(name)), line

    def _records(self, console: Console) -> RenderResult:
        from rich.segment import Segment

        bold = console.get_style("table.header")
        if self.title:
            yield Segment.line()
        for cells in self.rows:
            for name, text in self._record_lines(cells):
                yield Segment(name, bold)
                yield Segment(text)
                yield Segment.line()
            yield Segment.line()  # after each record, the last too: apart from what follows

    def _lines(self, cells: Sequence[str], bottom: bool = False) -> Iterator[list[str]]:
        """One row's cells, aligned to their widths, line by line: as many lines as its
        tallest cell needs, the shorter cells at the top (at the bottom for the header)."""
        folded = [fold(cell, width) for cell, width in zip(cells, self.widths, strict=True)]
        height = max(len(lines) for lines in folded)
        if bottom:
            folded = [[""] * (height - len(lines)) + lines for lines in folded]
        for n in range(height):
            yield [
                _aligned(lines[n] if n < len(lines) else "", width, column.justify)
                for lines, width, column in zip(folded, self.widths, self.columns, strict=True)
            ]

    def _rule(self, left: str, line: str, cross: str, right: str) -> str:
        """A horizontal rule: under the header, or the top or bottom edge."""
        if self.compact:
            return cross.join(line * (w + 2) for w in self.widths)[1:-1]
        return left + cross.join(line * (w + 2) for w in self.widths) + right

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich import box as boxes
        from rich.segment import Segment

        box = boxes.SIMPLE_HEAD if self.compact else boxes.HEAVY_HEAD
        if self.title:
            # Wrapped at spaces only: a path or a label longer than the width stays whole.
            style = console.get_style("table.title")
            for line in fold(self.title, min(self.width, options.max_width), cut=False):
                yield Segment(line, style)
                yield Segment.line()
        if self.records is not None:
            yield from self._records(console)
            return
        if self.compact:
            head = ("", f" {box.head_vertical} ", "")
            row = ("", f" {box.mid_vertical} ", "")
        else:
            head = (f"{box.head_left} ", f" {box.head_vertical} ", f" {box.head_right}")
            row = (f"{box.mid_left} ", f" {box.mid_vertical} ", f" {box.mid_right}")
            yield Segment(self._rule(box.top_left, box.top, box.top_divider, box.top_right))
            yield Segment.line()
        bold = console.get_style("table.header")
        for parts in self._lines([c.name for c in self.columns], bottom=True):
            yield Segment(head[0])
            for n, part in enumerate(parts):
                if n:
                    yield Segment(head[1])
                yield Segment(part, bold)
            yield Segment(head[2])
            yield Segment.line()
        yield Segment(
            self._rule(
                box.head_row_left, box.head_row_horizontal, box.head_row_cross, box.head_row_right
            )
        )
        yield Segment.line()
        left, between, right = row
        lines = [
            left + between.join(parts) + right
            for cells in self.rows
            for parts in self._lines(cells)
        ]
        if lines:
            yield Segment("\n".join(lines))
            yield Segment.line()
        if not self.compact:
            yield Segment(
                self._rule(box.bottom_left, box.bottom, box.bottom_divider, box.bottom_right)
            )
            yield Segment.line()


def fitted_table(
    title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
) -> FittedTable:
    """A table that fits ``width`` columns without cutting a ``whole`` column: optional
    columns are dropped and the borders thinned first, then the other columns fold (the widest
    first, none below :data:`FOLD_FLOOR`); when even that does not fit, the rows as records."""
    from rich.cells import cell_len

    natural = [
        max([cell_len(column.name)] + [max(map(cell_len, row[i].split("\n"))) for row in rows])
        for i, column in enumerate(columns)
    ]
    floor = [
        natural[i]
        if column.whole
        else min(natural[i], max([FOLD_FLOOR, *map(cell_len, column.name.split())]))
        for i, column in enumerate(columns)
    ]
    kept = list(range(len(columns)))

    def needed(style: tuple[int, int], widths: Sequence[int] = natural) -> int:
        return sum(widths[i] for i in kept) + style[0] * len(kept) + style[1]

    droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop is not None)
    while needed(_BORDERED) > width and droppable and needed(_COMPACT) > width:
        kept.remove(droppable.pop(0)[1])
    if needed(_COMPACT, floor) > width:
        return FittedTable(title, columns, rows, natural, compact=True, records=width)
    compact = needed(_BORDERED) > width
    widths = {i: natural[i] for i in kept}
    excess = needed(_COMPACT if compact else _BORDERED) - width
    foldable = [i for i in kept if not columns[i].whole]
    while excess > 0:
        widest = max(
            (i for i in foldable if widths[i] > floor[i]), key=lambda i: widths[i], default=None
        )
        if widest is None:
            break
        widths[widest] -= 1
        excess -= 1
    return FittedTable(
        title,
        [columns[i] for i in kept],
        ([row[i] for i in kept] for row in rows),
        [widths[i] for i in kept],
        compact,
    )
