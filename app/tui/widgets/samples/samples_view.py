"""The Samples tab: one run's samples in a table, sortable by any statistic.

This is how a user finds the samples a model finds hardest: sort by loss (or nuclear norm,
effective rank, response length, ...) and open one to read it and see its curve over the run's
mean. Sorting happens in the cache (SQL), so a run of thousands of samples sorts instantly and
only the first rows are drawn. Each statistic column is one number per sample, the mean over the
run's layers and projections; the caption says so, since a column named "nuclear_norm" alone
reads like one matrix's norm. n steps through the runs overlaid in the chart (run_choice.py).
Reads go through the cache reader; the runs known and the response-length filter are the App's,
bound into this pane's reactives, and opening a sample is a message (the App shows the detail
screen: widgets do not import screens).

Samples are data too (the follow-up paper trains on the samples the gradients single out): m
marks a sample and M every sample down to the cursor (sort by a statistic, move to row K, M: the
top K), marked rows carry a ● in their first column (legible without colour), and w writes the
marked samples' records, as their data file has them, to a dataset file that ``compute`` reads
(the App asks where). p swaps the table for a scatter of the sorted statistic against response
length, then against loss, then back; the marked samples have their own glyph there.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist

from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.format import number
from layerscope.app.tui.messages import (
    RUNS_NOT_READ,
    MarkedSamplesWriteRequested,
    SampleOpened,
    SamplesLoaded,
)
from layerscope.app.tui.widgets.run_choice import (
    NOTHING_OVERLAID,
    OverlaidRunChoice,
    place,
    run_choice_bindings,
    run_name,
)
from layerscope.app.tui.widgets.samples.sample_scatter import SampleScatter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from layerscope.analysis.base.records import RunInfo, SampleRow
    from layerscope.analysis.cache import ResultsCache
    from layerscope.app.tui.services.cache_reader import CacheReader

ROW_LIMIT = 500
MARK = "●"  # a marked sample's first cell; unmarked: blank
MARK_COLUMN = ("marked", MARK)
# What p shows in turn: the table (None), then the scatter against these per-sample values.
SCATTER_AXES: tuple[str | None, ...] = (None, "response_tokens", "loss")
BASE_COLUMNS = (
    ("index", "#"),
    ("loss", "loss"),
    ("response_tokens", "resp tok"),
    ("prompt_tokens", "prompt tok"),
)
STAT_COLUMNS = (
    "nuclear_norm",
    "sigma1_ratio",
    "effective_rank",
    "stable_rank",
    "frobenius_norm",
    "nuclear_per_loss",
    "sigma_max",
    "sigma_min",
    "mean",
    "max",
    "min",
)


def aggregation(run: RunInfo | None) -> str:
    """Over what each statistic column is averaged: "statistics: mean over layers 0-5, q k v o"
    (the cache's per-sample means over layers and projections, see ResultsCache.samples)."""
    if run is None or not run.layers:
        return "statistics: mean over layers and projections"
    layers = f"layers 0-{run.layers - 1}" if run.layers > 1 else "layer 0"
    return f"statistics: mean over {layers}, {' '.join(run.projections)}"


class SamplesPane(ReportsWorkerErrors, OverlaidRunChoice, Vertical):
    """Samples of `run_id`, sorted in the cache; enter opens a sample."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "s",
            "sort_by_column",
            "Sort by column",
            tooltip="Sort by the cursor's column (again: reverse)",
            id="samples.sort",
        ),
        Binding(
            "d",
            "open_sample",
            "Detail (enter)",
            tooltip="Open the sample: text and its curve over the run's mean (also enter)",
            id="samples.open",
        ),
        Binding(
            "m",
            "toggle_mark",
            "Mark",
            tooltip="Mark or unmark the sample at the cursor (w writes the marked samples)",
            id="samples.mark",
        ),
        Binding(
            "M",
            "mark_to_cursor",
            "Mark down to here",
            show=False,
            tooltip="Mark every sample from the first row to the cursor: the top K as sorted",
            id="samples.mark_to_cursor",
        ),
        Binding(
            "u",
            "clear_marks",
            "Unmark all",
            show=False,
            tooltip="Unmark every sample of this run",
            id="samples.clear_marks",
        ),
        Binding(
            "w",
            "write_marked",
            "Write marked",
            tooltip="Write the marked samples' records as a dataset file (compute reads it)",
            id="samples.write_marked",
        ),
        Binding(
            "p",
            "cycle_scatter",
            "Scatter",
            tooltip="Scatter of the sorted statistic against response length, then loss, then "
            "the table again",
            id="samples.scatter",
        ),
        *run_choice_bindings("samples"),
    ]

    # Bound to the App's (data_bind, browse_tabs.py): the runs in the cache (for the status line
    # and the detail screen's title) and the response-length filter.
    runs_by_id: var[Mapping[str, RunInfo]] = var(RUNS_NOT_READ, init=False)
    length_range: var[tuple[int, int] | None] = var(None, init=False)

    def __init__(self, reader: CacheReader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._reads = reader.channel(self, "samples-load")
        self.run_id: str | None = None
        self.overlaid: list[str] = []  # the chart's runs, which n steps through
        self.sort_by = "loss"
        self.descending = True
        self.rows: list[SampleRow] = []
        self.marked: set[int] = set()  # sample indices of `run_id` the user marked
        self.scatter_axis: str | None = None  # None: the table is shown

    def compose(self) -> ComposeResult:
        yield Static("", id="samples-status", classes="status-line")
        yield Static("", id="samples-caption", classes="caption-line")
        table: DataTable[str] = DataTable(
            id="samples-table", cursor_type="cell", zebra_stripes=True
        )
        yield table
        yield SampleScatter(id="samples-scatter")

    def on_mount(self) -> None:
        self.query_one(SampleScatter).display = False
        self._fill([])
        self._update_status()

    def _fill(self, rows: list[list[str]]) -> None:
        """Replace the table's rows, with each column as wide as its widest cell.

        The widths are set here rather than left to the DataTable's auto width, which it
        measures only when it next goes idle: a refill landing between two idle passes could
        be drawn with the previous content's widths (an index of 11 shown as "1").
        """
        table = self.query_one(DataTable)
        column = table.cursor_coordinate.column
        titles = [MARK_COLUMN[1]] + [title for _, title in BASE_COLUMNS] + list(STAT_COLUMNS)
        keys = [MARK_COLUMN[0]] + [key for key, _ in BASE_COLUMNS] + list(STAT_COLUMNS)
        widths = [
            max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(titles)
        ]
        table.clear(columns=True)
        for key, title, width in zip(keys, titles, widths, strict=True):
            table.add_column(title, key=key, width=width)
        for row, sample in zip(rows[:ROW_LIMIT], self.rows, strict=False):
            table.add_row(*row, key=str(sample.index))
        if rows:
            table.move_cursor(row=0, column=column)

    def watch_length_range(
        self, before: tuple[int, int] | None, length_range: tuple[int, int] | None
    ) -> None:
        """The response-length filter (owned by the App): read again when it changed (a bound
        value comes again unchanged with every push)."""
        if length_range != before and self.run_id is not None:
            self.reload()

    def show_run(self, run_id: str | None, refresh: bool = False) -> None:
        """Show this run's samples (read again when `refresh`: the run is still growing)."""
        if run_id == self.run_id and self.rows and not refresh:
            return
        if run_id != self.run_id:
            self.marked = set()
        self.run_id = run_id
        self.reload()

    def reload(self) -> None:
        self._update_status()
        if self.run_id is None:
            self._reads.invalidate()
            self.rows = []
            self._fill([])
            return
        run_id, sort_by, descending = self.run_id, self.sort_by, self.descending
        length = self.length_range
        # the scatter draws every sample; the table its first ROW_LIMIT rows
        limit = None if self.scatter_axis else ROW_LIMIT

        def query(cache: ResultsCache) -> SamplesLoaded:
            rows = cache.samples(
                run_id,
                sort_by=sort_by,
                descending=descending,
                limit=limit,
                response_tokens=length,
            )
            return SamplesLoaded(run_id, rows)

        self._reads.request(query, lambda: SamplesLoaded(run_id))

    @reported
    def on_samples_loaded(self, message: SamplesLoaded) -> None:
        message.stop()
        if not self._reads.accept(message):
            return
        if message.error:
            self.notify(f"Could not read the samples: {message.error}", severity="error")
        self.rows = message.rows
        self._fill(
            [
                [
                    self._mark(row.index),
                    str(row.index),
                    number(row.loss),
                    str(row.response_tokens),
                    str(row.prompt_tokens),
                    *(number(row.stats.get(key, float("nan"))) for key in STAT_COLUMNS),
                ]
                for row in self.rows[:ROW_LIMIT]
            ]
        )
        self._show_scatter()
        self._update_status()

    def _mark(self, index: int) -> str:
        return MARK if index in self.marked else ""

    # --- marks -----------------------------------------------------------------------------

    def _cursor_row(self) -> SampleRow | None:
        table = self.query_one(DataTable)
        if not self.rows or self.run_id is None:
            return None
        return self.rows[min(table.cursor_coordinate.row, len(self.rows) - 1, ROW_LIMIT - 1)]

    def _redraw_marks(self) -> None:
        table = self.query_one(DataTable)
        for row in self.rows[:ROW_LIMIT]:
            with contextlib.suppress(CellDoesNotExist):
                table.update_cell(str(row.index), MARK_COLUMN[0], self._mark(row.index))
        self._show_scatter()
        self._update_status()

    def action_toggle_mark(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        self.marked ^= {row.index}
        self._redraw_marks()

    def action_mark_to_cursor(self) -> None:
        row = self._cursor_row()
        if row is None:
            return
        last = self.rows.index(row)
        self.marked |= {r.index for r in self.rows[: last + 1]}
        self._redraw_marks()

    def action_clear_marks(self) -> None:
        self.marked = set()
        self._redraw_marks()

    def selection_label(self) -> str:
        """What the marks are, for a file name: "top-5-by-nuclear_norm" when they are the
        first rows as sorted, else "7-marked"."""
        count = len(self.marked)
        first = {r.index for r in self.rows[:count]}
        if count and first == self.marked and self.sort_by != "index":
            end = "top" if self.descending else "bottom"
            return f"{end}-{count}-by-{self.sort_by}"
        return f"{count}-marked"

    def marked_in_order(self) -> tuple[int, ...]:
        """The marked samples in the table's order (then any not shown, by index)."""
        shown = [r.index for r in self.rows if r.index in self.marked]
        return (*shown, *sorted(self.marked - set(shown)))

    def action_write_marked(self) -> None:
        if self.run_id is None or not self.marked:
            self.notify("No sample is marked: m marks one, M every row down to the cursor.")
            return
        self.post_message(
            MarkedSamplesWriteRequested(self.run_id, self.marked_in_order(), self.selection_label())
        )

    # --- scatter ---------------------------------------------------------------------------

    def scatter_statistic(self) -> str:
        """The statistic the scatter draws: the sorted column's, else the nuclear norm."""
        return self.sort_by if self.sort_by in STAT_COLUMNS else "nuclear_norm"

    def action_cycle_scatter(self) -> None:
        axis = SCATTER_AXES[(SCATTER_AXES.index(self.scatter_axis) + 1) % len(SCATTER_AXES)]
        self.scatter_axis = axis
        table, scatter = self.query_one(DataTable), self.query_one(SampleScatter)
        table.display = axis is None
        scatter.display = axis is not None
        (table if axis is None else scatter).focus()  # the pane's keys keep working
        if self.run_id is not None:
            self.reload()  # the scatter reads every sample, the table its first rows

    def _show_scatter(self) -> None:
        axis = self.scatter_axis
        if axis is None:
            return
        statistic = self.scatter_statistic()
        points = [
            (
                row.index,
                float(row.response_tokens) if axis == "response_tokens" else row.loss,
                row.stats.get(statistic, float("nan")),
            )
            for row in self.rows
            if axis != "response_tokens" or row.response_tokens >= 0
        ]
        from layerscope.analysis.results.selection import spearman

        x_label = "response tokens" if axis == "response_tokens" else "loss"
        found = spearman(
            statistic, {i: y for i, _x, y in points}, axis, {i: x for i, x, _y in points}
        )
        rho = "" if math.isnan(found.rho) else f" · Spearman rho {found.rho:+.2f} (n {found.n})"
        self.query_one(SampleScatter).show(
            points, self.marked, f"{statistic} against {x_label}{rho}", x_label
        )

    def _update_status(self) -> None:
        status = self.query_one("#samples-status", Static)
        caption = self.query_one("#samples-caption", Static)
        if self.run_id is None:
            status.update("No run chosen: pick one in the Runs tab (s) or run something (r).")
            caption.update(NOTHING_OVERLAID if not self.overlaid else "n: the overlaid runs")
            return
        name = run_name(self.run_id, self.runs_by_id, self.overlaid)
        status.update(Text.assemble((name, "bold"), f" · {place(self.run_id, self.overlaid)}"))
        arrow = "↓" if self.descending else "↑"
        marks = f" · {MARK} {len(self.marked)} marked" if self.marked else ""
        shown = len(self.rows) if self.scatter_axis else min(len(self.rows), ROW_LIMIT)
        caption.update(
            f"sorted by {self.sort_by} {arrow} · {shown} shown"
            f"{f' (first {ROW_LIMIT})' if shown >= ROW_LIMIT and not self.scatter_axis else ''}"
            f"{marks} · {aggregation(self.runs_by_id.get(self.run_id))}"
        )

    def action_sort_by_column(self) -> None:
        table = self.query_one(DataTable)
        if not table.columns:
            return
        column_key = list(table.columns)[table.cursor_coordinate.column].value or "loss"
        if column_key == MARK_COLUMN[0]:
            self.notify("The marks are not a sort key: sort by a statistic, then M marks the top.")
            return
        if column_key == self.sort_by:
            self.descending = not self.descending
        else:
            self.sort_by = column_key
            self.descending = column_key != "index"
        self.reload()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(column=event.column_index)
        self.action_sort_by_column()

    def action_open_sample(self) -> None:
        row = self._cursor_row()
        if row is None or self.run_id is None:
            return
        metric = self.sort_by if self.sort_by in STAT_COLUMNS else "nuclear_norm"
        self.post_message(SampleOpened(self.run_id, row, metric))

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_open_sample()

    def export_rows(self) -> list[list[str]]:
        header = [key for key, _ in BASE_COLUMNS] + list(STAT_COLUMNS)
        lines = [[*header, "instruction", "output", "marked"]]
        for row in self.rows[:ROW_LIMIT]:
            lines.append(
                [
                    str(row.index),
                    repr(row.loss),
                    str(row.response_tokens),
                    str(row.prompt_tokens),
                    *(repr(row.stats.get(key, float("nan"))) for key in STAT_COLUMNS),
                    row.instruction,
                    row.output,
                    "1" if row.index in self.marked else "",
                ]
            )
        return lines
