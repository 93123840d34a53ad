"""The table under the chart: MAD per run and projection, and how far each run is from the first.

One row per (run, projection): MAD over all layers and per depth segment (the paper's Table
numbers), then the relative difference against the first overlaid run (the baseline) and the
layers where that difference is largest. Run names are coloured like their curves.

On screen the cells are compact (3 significant digits, short headings, "layers" listing where
the difference is largest without the values) so that the whole table fits 80 columns next to
two-part run labels; longer labels make it scroll sideways (left/right). The CSV export keeps
the full cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from layerscope.app.tui.format import number, rich_colour

__all__ = ["ComparisonTable", "number"]

COLUMNS = ("run", "proj", "MAD all", "early", "middle", "late", "rel.diff", "largest at layers")
SCREEN_COLUMNS = ("run", "proj", "MAD", "early", "mid", "late", "rel.diff", "layers")


class ComparisonTable(DataTable):
    """MAD and relative difference rows; `rows_as_csv()` feeds the export."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.csv_rows: list[list[str]] = []

    def on_mount(self) -> None:
        self.add_columns(*SCREEN_COLUMNS)

    def show(
        self,
        mad_rows: Sequence[Any],
        relative_rows: Sequence[Any],
        labels: dict[str, str],
        colours: dict[str, str],
        baseline: str | None,
    ) -> None:
        """Fill from compare.MadRow and compare.RelativeDifferenceRow lists."""
        relative = {(row.run_id, row.projection): row for row in relative_rows}
        self.clear()
        self.csv_rows = [list(COLUMNS)]
        for row in mad_rows:
            label = labels.get(row.run_id, row.run_id[:8])
            difference = relative.get((row.run_id, row.projection))
            if row.run_id == baseline:
                rel_text, top_text = "baseline", ""
            elif difference is None:
                rel_text, top_text = "-", ""
            else:
                rel_text = number(difference.value, 3)
                top_text = ", ".join(
                    f"{layer} ({number(value, 2)})" for layer, value in difference.top_layers[:3]
                )
            cells = [
                label,
                row.projection,
                number(row.all),
                number(row.early),
                number(row.middle),
                number(row.late),
                rel_text,
                top_text,
            ]
            self.csv_rows.append(cells)
            if difference is not None and row.run_id != baseline:
                rel_text = number(difference.value, 3)
                top_text = " ".join(str(layer) for layer, _ in difference.top_layers[:3])
            self.add_row(
                Text(label, style=rich_colour(colours.get(row.run_id, "white"))),
                row.projection,
                *(number(value, 3) for value in (row.all, row.early, row.middle, row.late)),
                rel_text,
                top_text,
            )
