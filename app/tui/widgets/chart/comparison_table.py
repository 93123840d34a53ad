"""The table under the chart: MAD per run and projection, and how far each run is from the first.

One row per (run, projection): MAD over all layers and per depth segment (the paper's Table
numbers), then the relative difference against the first overlaid run (the baseline), at how
many layers the run differs significantly from it ("sig": 3/4 means 3 of 4 tested layers have
a Benjamini-Hochberg q below 0.05; the CSV has the whole verdict, the pairing and the layers)
and the layers where the relative difference is largest. Run names are coloured like their curves.

On screen the cells are compact (3 significant digits, short headings: "RD" the relative
difference, "base" on the baseline's rows, "RD at" the layers where it is largest without the
values, "sig" the count of differing layers) so that the whole table fits 80 columns next to
two-part run labels; longer labels make it scroll sideways (left/right). The CSV export keeps
the full cells.

The tests come after the MAD and relative differences (on a big cache they take longer):
``testing`` shows "…" in "sig" (and "testing…" as the CSV's verdict) until ``significance``
arrives; both are reactive, and setting either refills the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

from layerscope.app.palettes import rich_colour
from layerscope.app.tui.format import number

__all__ = ["ComparisonTable", "number"]

COLUMNS = (
    "run",
    "proj",
    "MAD all",
    "early",
    "middle",
    "late",
    "rel.diff",
    "largest at layers",
    "verdict",
    "pairing",
    "differing layers",
)
SCREEN_COLUMNS = ("run", "proj", "MAD", "early", "mid", "late", "RD", "RD at", "sig")
TESTING = "testing…"


class ComparisonTable(DataTable):
    """MAD and relative difference rows; `rows_as_csv()` feeds the export."""

    # significance.ProjectionSignificance of each run against the baseline, per projection
    significance: reactive[tuple[Any, ...]] = reactive((), init=False)
    # the tests are being computed (the MAD and relative differences are shown already)
    testing: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.csv_rows: list[list[str]] = []
        self._mad_rows: Sequence[Any] = ()
        self._relative_rows: Sequence[Any] = ()
        self._labels: dict[str, str] = {}
        self._colours: dict[str, str] = {}
        self._baseline: str | None = None

    def on_mount(self) -> None:
        self.add_columns(*SCREEN_COLUMNS)

    def show(
        self,
        mad_rows: Sequence[Any],
        relative_rows: Sequence[Any],
        labels: dict[str, str],
        colours: dict[str, str],
        baseline: str | None,
        significance: Sequence[Any] = (),
        *,
        testing: bool = False,
    ) -> None:
        """Fill from compare.MadRow, compare.RelativeDifferenceRow and (tests against the
        baseline) significance.ProjectionSignificance lists; `testing`: the tests are still
        being computed."""
        self._mad_rows, self._relative_rows = mad_rows, relative_rows
        self._labels, self._colours, self._baseline = labels, colours, baseline
        self.set_reactive(ComparisonTable.significance, tuple(significance))
        self.set_reactive(ComparisonTable.testing, testing)
        self._fill()

    def watch_significance(self) -> None:
        self._fill()

    def watch_testing(self) -> None:
        self._fill()

    def _fill(self) -> None:
        labels, colours, baseline = self._labels, self._colours, self._baseline
        relative = {(row.run_id, row.projection): row for row in self._relative_rows}
        tests = {(row.run_b, row.projection): row for row in self.significance}
        self.clear()
        self.csv_rows = [list(COLUMNS)]
        for row in self._mad_rows:
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
            test = tests.get((row.run_id, row.projection))
            if row.run_id != baseline and difference is not None and self.testing:
                verdict_cells = [TESTING, "", ""]
                sig_text = "…"
            elif test is None or row.run_id == baseline:
                verdict_cells = ["", "", ""]
                sig_text = ""
            else:
                differing = " ".join(str(layer) for layer in test.differing)
                verdict_cells = [test.verdict, test.pairing, differing]
                sig_text = f"{len(test.differing)}/{len(test.tested)}"
            cells = [
                label,
                row.projection,
                number(row.all),
                number(row.early),
                number(row.middle),
                number(row.late),
                rel_text,
                top_text,
                *verdict_cells,
            ]
            self.csv_rows.append(cells)
            if difference is not None and row.run_id != baseline:
                rel_text = number(difference.value, 3)
                top_text = " ".join(str(layer) for layer, _ in difference.top_layers[:3])
            self.add_row(
                Text(label, style=rich_colour(colours.get(row.run_id, "white"))),
                row.projection,
                *(number(value, 3) for value in (row.all, row.early, row.middle, row.late)),
                "base" if row.run_id == baseline else rel_text,
                top_text,
                sig_text,
            )
