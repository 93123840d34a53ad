"""The Chart tab: overlaid layer-wise curves of the selected runs, and their comparison table.

Reads and draws the view (chart_view.py: the statistic, projections, interval, log scale, x
axis, and what comes from the App: the runs known, the runs overlaid, the response-length
filter), with what else the App sets: whether a computation is running and the theme's
darkness. Every change of what a read answers funnels into `reload`, which reads once for all
the changes made in one go (a scan that brings new counts and the runs it overlays, say), and
only from the runs the cache held at the last scan. Curves are read through the cache reader's
coalescing channel (a large cache must not freeze the keyboard, and a batch landing every
second during a run only marks the view stale while a read is in flight). The w view of the
spectra reads on its own (spectra_view.py).

The tests of significance behind the chart's marks and the table's "sig" column take longer
than the curves on a big cache (paired tests read every shared sample), so the curves come
first: the chart read hands the tests over only when they are already known for what the runs
have stored (:func:`~layerscope.analysis.results.pair_significance.memoised_significance_rows`), else the curves
are drawn with "testing…" and a second coalescing channel has the tests computed (once per
pair and stored counts: the analysis layer keeps them) and fills in the marks when they arrive.
They are computed in a process of their own (the significance pool the App passes in,
services/significance_pool.py): in a thread here they held the GIL, and the curves waited.
What only changes how the data is drawn (interval, log scale, x axis, theme, computing or not)
is redrawn from the data held, without a read; ``ChartViewChanged`` is posted when the user
changes the runs or the view, not when new data is read.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import Static

from layerscope.analysis.base.records import ENTRY_STATISTICS
from layerscope.analysis.curves.statistics import ci95
from layerscope.app.labels import run_labels, run_settings
from layerscope.app.palettes import BAND_MARKERS, RUN_MARKERS, run_colours
from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.format import format_length_range
from layerscope.app.tui.messages import ChartLoaded, SignificanceTested
from layerscope.app.tui.widgets.chart.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.chart.layer_chart import BAND_LABELS, ChartSeries, LayerChart
from layerscope.app.tui.widgets.chart.spectra_view import SpectraView
from layerscope.app.tui.widgets.chart.spectrum_chart import SpectrumChart

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LayerCurve
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.curves.significance import ProjectionSignificance
    from layerscope.app.tui.export import ChartFigure
    from layerscope.app.tui.services.cache_reader import CacheReader
    from layerscope.app.tui.services.significance_pool import SignificancePool


def differing_layers(significance: list[ProjectionSignificance]) -> dict[str, list[int]]:
    """Per projection, the layers where some run differs significantly from the baseline."""
    marks: dict[str, set[int]] = {}
    for row in significance:
        marks.setdefault(row.projection, set()).update(row.differing)
    return {projection: sorted(layers) for projection, layers in marks.items()}


class ComparePane(ReportsWorkerErrors, SpectraView, Vertical):
    """Chart + comparison table for `run_ids`; keys (chart_view.py) change what is drawn."""

    # What the App sets besides the view: they change only how the data is drawn.
    computing: var[bool] = var(False, init=False)  # what an empty chart says
    dark: var[bool] = var(True, init=False)  # the palette

    def __init__(
        self,
        reader: CacheReader,
        significance: SignificancePool,
        *,
        dark: bool = True,
        mono: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(reader, id=id)
        self._reads = reader.channel(self, "chart-load", coalesce=True)
        self._reads.on_stale = self.reload
        self._tests = reader.channel(self, "chart-tests", coalesce=True)
        self._tests.on_stale = self._test_again
        self._tester = significance  # computes the tests in a process of its own
        self._loaded: ChartLoaded | None = None  # the data drawn (redrawn without a read)
        # what the read asked last and what the data held answers: runs, statistic,
        # projections and length range (`_question()`)
        self._asked: tuple[object, ...] | None = None
        self._answered: tuple[object, ...] | None = None
        self._significance: list[ProjectionSignificance] | None = []  # None: being tested
        self._read_asked = False  # a read is asked for and starts after the current handler
        self.set_reactive(ComparePane.dark, dark)
        self.mono = mono  # NO_COLOR; runs are told apart by marker with colour or without
        self.curves: list[LayerCurve] = []  # as last drawn (the figure export draws them)
        self.labels: dict[str, str] = {}
        self.colours: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="chart-status", classes="status-line")
        yield LayerChart(id="layer-chart")
        yield SpectrumChart(id="spectrum-chart")
        yield ComparisonTable(id="comparison-table")

    def on_mount(self) -> None:
        self.query_one(SpectrumChart).display = False
        self.update_status()

    def watch_computing(self) -> None:
        self.redraw()

    def watch_dark(self) -> None:
        self.redraw()

    # --- loading ----------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the curves again, once for every change made in one go: the read starts after
        the handler that asked (two keys' or a scan's changes in one handler make one read),
        or as soon as the read in flight ends (the channel coalesces)."""
        self.update_status()
        if not self._read_asked:
            self._read_asked = True
            self.call_later(self._read)

    def _read(self) -> None:
        """Start the read `reload` asked for, of the view as it is now."""
        self._read_asked = False
        if self.showing_spectra:
            self.reload_spectra()
        if not self.run_ids:
            self._reads.invalidate()
            self._tests.invalidate()
            self._loaded = self._answered = None
            self._show_empty()
            return
        metric = self.metric
        projections = self.projection_order()
        length_range = self.length_range
        # The runs the cache held at the last scan (a run of a request that has not started
        # yet is not there: skipped); a scan that brings it reads again (watch_runs_by_id).
        present = [run_id for run_id in self.run_ids if run_id in self.runs_by_id]

        def query(cache: ResultsCache) -> ChartLoaded:
            # one connection for the whole load (each costs about 20 ms of CPU to open)
            with cache.session():
                return read(cache)

        def read(cache: ResultsCache) -> ChartLoaded:
            from layerscope.analysis.results.compare import compare_runs
            from layerscope.analysis.results.pair_significance import (
                memoised_significance_rows,
                stored_state,
            )

            if not present:
                return ChartLoaded(metric=metric, response_tokens=length_range)
            pairs = [(present[0], other) for other in present[1:]]
            comparison = compare_runs(
                cache,
                present,
                metric,
                projections,
                response_tokens=length_range,
                pairs=pairs,
                significance=False,
            )
            known = memoised_significance_rows(
                cache, comparison.curves, pairs, metric, length_range
            )
            # in this connection, so of the very state the curves were read from
            stored = {run_id: stored_state(cache.run(run_id)) for pair in pairs for run_id in pair}
            return ChartLoaded(
                comparison.curves,
                comparison.mad,
                comparison.relative,
                known,
                pairs=pairs,
                metric=metric,
                response_tokens=length_range,
                stored=stored,
            )

        chart = self.query_one(LayerChart)
        if not chart.series:  # nothing drawn: a read is on its way, not "select runs"
            chart.placeholder = f"Reading the curves of {len(self.run_ids)} runs…"
            chart.replot()
        if self._reads.request(query, ChartLoaded):
            self._asked = self._question()

    def _question(self) -> tuple[object, ...]:
        """What a chart read answers: the runs, the statistic, the projections and the
        length range (the rest of the view only changes how the answer is drawn)."""
        return (tuple(self.run_ids), self.metric, tuple(self.projection_order()), self.length_range)

    @reported
    def on_chart_loaded(self, message: ChartLoaded) -> None:
        message.stop()
        if not self._reads.accept(message):
            return
        self._tests.invalidate()  # tests of earlier curves are no longer wanted
        if message.error:
            self._loaded = None
            self.query_one(LayerChart).placeholder = f"Could not read the curves: {message.error}"
            self._show_empty()
            return
        self._loaded, self._answered = message, self._asked
        self._significance = message.significance
        self._show()
        if message.significance is None:
            # after the curves are on screen: a worker testing meanwhile would hold the GIL
            # for half of every slice (scipy's import alone is 0.7 s of CPU)
            self.call_after_refresh(self._test, message)

    def _test(self, loaded: ChartLoaded) -> None:
        """Compute the tests of the curves drawn (a pair's are computed once and kept), in the
        tests' own process: the worker here only waits for them, so the UI thread keeps the GIL
        (services/significance_pool.py)."""
        curves, pairs = list(loaded.curves), list(loaded.pairs)
        metric, length_range, stored = loaded.metric, loaded.response_tokens, loaded.stored
        tester = self._tester

        def compute() -> SignificanceTested:
            return SignificanceTested(tester.compute(curves, pairs, metric, length_range, stored))

        self._tests.submit(compute, SignificanceTested)

    def _test_again(self) -> None:
        """Curves came while tests were computed: test the newest ones (often known by now)."""
        if self._loaded is not None and self._significance is None:
            self._test(self._loaded)

    @reported
    def on_significance_tested(self, message: SignificanceTested) -> None:
        message.stop()
        if not self._tests.accept(message) or self._loaded is None:
            return
        if message.significance is None:
            # a run stored more since these curves were read: read them again (their tests
            # follow), "testing…" meanwhile
            self.reload()
            return
        if message.error:
            self.notify(f"Could not test significance: {message.error}", severity="warning")
        significance = [] if message.error else list(message.significance)
        self._significance = significance
        # what arrives flows into the widgets through their reactives
        chart = self.query_one(LayerChart)
        chart.marks = self._marks_at(differing_layers(significance))
        chart.testing = False
        table = self.query_one(ComparisonTable)
        table.significance = tuple(significance)
        table.testing = False

    def redraw(self) -> None:
        """Draw the data held again in the current view, without a read, at once (a read in
        flight, a batch's say, does not hold the key up). Data that answers another question
        (another statistic or runs, asked meanwhile) is not drawn: the read in flight for the
        current one draws its answer in the view of its arrival."""
        if self._loaded is not None and self._answered == self._question():
            self._show()
        elif not self.run_ids:
            self._show_empty()

    def _show_empty(self) -> None:
        self.curves = []
        self.query_one(LayerChart).show([], [], self.metric, self.band, self.log_scale)
        self.query_one(ComparisonTable).show([], [], {}, {}, None, [])

    def _show(self) -> None:
        """Draw the data held (`_loaded`, and the tests when known) in the current view."""
        from layerscope.analysis.results.compare import normalised_depth

        assert self._loaded is not None
        curves = self._loaded.curves
        testing = self._significance is None
        significance = self._significance or []
        self.curves = list(curves)
        runs = self.runs_by_id
        known = [runs[run_id] for run_id in self.run_ids if run_id in runs]
        self.labels = run_labels(known)
        palette = run_colours(self.dark)
        self.colours = {}
        markers: dict[str, str] = {}
        band_markers: dict[str, str] = {}
        for position, run_id in enumerate(self.run_ids):
            self.colours[run_id] = palette[position % len(palette)]
            markers[run_id] = RUN_MARKERS[position % len(RUN_MARKERS)]
            band_markers[run_id] = BAND_MARKERS[position % len(BAND_MARKERS)]
        series = [
            ChartSeries(
                label=self.labels.get(curve.run_id, curve.run_id[:8]),
                projection=curve.projection,
                layers=normalised_depth(curve.layers, self.layer_count(curve))
                if self.depth == "normalised"
                else [float(layer) for layer in curve.layers],
                mean=list(curve.mean),
                # the interval only when drawn: its t quantile imports scipy (0.7 s of CPU)
                ci95=ci95(curve) if self.band != "none" else [math.nan] * len(curve.mean),
                colour=self.colours.get(curve.run_id, palette[0]),
                marker=markers.get(curve.run_id, "braille"),
                band_marker=band_markers.get(curve.run_id, BAND_MARKERS[0]),
                settings=run_settings(runs[curve.run_id]) if curve.run_id in runs else "",
            )
            for curve in curves
            if any(math.isfinite(value) for value in curve.mean)  # else nothing to draw
        ]
        chart = self.query_one(LayerChart)
        if curves and not series:  # stored samples, none with this statistic
            kept = "entry statistics" if self.metric in ENTRY_STATISTICS else "it"
            chart.placeholder = (
                f"No {self.metric} in these runs: they were computed without {kept} "
                "(s: next statistic)."
            )
        elif not self.run_ids:
            chart.placeholder = "Select runs to compare (Runs tab, space) or start a run (r)."
        elif self.computing:
            chart.placeholder = "Computing: the curves appear here as batches land."
        elif any(run_id not in self.runs_by_id for run_id in self.run_ids):
            # restored or chosen before the cache was scanned: its runs are being read
            chart.placeholder = f"Reading the cache for {len(self.run_ids)} runs…"
        elif self.metric == "adjacent_cosine":
            chart.placeholder = (
                "No per-sample cosines in these runs: computed with --no-cosines, imported "
                "without cosine_sim, or stored before cache schema 3 (s: next statistic)."
            )
        elif self.length_range is not None:
            chart.placeholder = (
                f"No samples of these runs in the length range "
                f"{format_length_range(self.length_range)} (f: change or clear it)."
            )
        else:
            chart.placeholder = "No data for these runs: no samples stored yet."
        chart.show(
            series,
            self.projection_order(),
            self.metric,
            self.band,
            self.log_scale,
            legend_settings=self.legend_settings,
            marks=self._marks_at(differing_layers(significance)),
            testing=testing,
            depth=self.depth,
        )
        if chart.log_refused:
            self.notify(
                f"{self.metric} has values <= 0: log scale needs positive values.",
                severity="warning",
            )
        baseline = self.run_ids[0] if self.run_ids else None
        self.query_one(ComparisonTable).show(
            self._loaded.mad_rows,
            self._loaded.differences,
            self.labels,
            self.colours,
            baseline,
            significance,
            testing=testing,
        )

    def _marks_at(self, marks: dict[str, list[int]]) -> dict[str, list[float]]:
        """The marks' x positions: layers, or the baseline run's normalised depths (what the
        tests compare is the baseline's layer i with the other run's layer i)."""
        if self.depth != "normalised":
            return {projection: [float(x) for x in layers] for projection, layers in marks.items()}
        from layerscope.analysis.results.compare import normalised_depth

        run = self.runs_by_id.get(self.run_ids[0]) if self.run_ids else None
        count = run.layers if run is not None and run.layers else None
        return {
            projection: normalised_depth(layers, count or max(layers, default=0) + 1)
            for projection, layers in marks.items()
        }

    def layer_count(self, curve: LayerCurve) -> int:
        """The layers of the curve's model (its run's), for normalised depth."""
        run = self.runs_by_id.get(curve.run_id)
        return run.layers if run and run.layers else max(curve.layers, default=0) + 1

    def update_status(self) -> None:
        projections = " ".join(self.projection_order())
        length = format_length_range(self.length_range) or "all"
        scale = "log" if self.log_scale else "linear"
        runs = len(self.run_ids)
        self.query_one("#chart-status", Static).update(
            f"[b]{self.metric}[/b] · {projections} · {BAND_LABELS[self.band]} · {scale}"
            f" · length {length} · {runs} run{'s' if runs != 1 else ''}"
            + (" · x: depth 0-1" if self.depth == "normalised" else "")
            + (" · w: spectra" if self.showing_spectra else "")
        )

    # --- export -----------------------------------------------------------------------------

    def export_chart_text(self) -> str:
        if self.showing_spectra:
            return self.query_one(SpectrumChart).as_text()
        return self.query_one(LayerChart).as_text()

    def export_figure(self) -> ChartFigure | None:
        """The curves drawn, for the paper's figure; None when nothing is drawn or the
        statistic has no layers (loss)."""
        from layerscope.app.tui.export import ChartFigure

        curves = [c for c in self.curves if c.projection != "loss"]
        if not curves:
            return None
        return ChartFigure(
            curves,
            dict(self.labels),
            self.metric,
            {c.run_id: self.layer_count(c) for c in curves},
            self.depth,
            self.band != "none",
        )

    def export_paper_tables(self) -> dict[str, str]:
        """The paper's MAD table of the curves drawn, one per projection shown, as Markdown and
        LaTeX: file name -> text (app/tui/export.py's :func:`paper_tables`)."""
        from layerscope.app.tui.export import paper_tables

        runs = [self.runs_by_id[r] for r in self.run_ids if r in self.runs_by_id]
        return paper_tables(
            runs, self.curves, self.metric, self.projection_order(), self.length_range
        )

    def export_table_rows(self) -> list[list[str]]:
        return self.query_one(ComparisonTable).csv_rows
