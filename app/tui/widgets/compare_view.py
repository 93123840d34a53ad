"""The Chart tab: overlaid layer-wise curves of the selected runs, and their comparison table.

Holds the view's choices (statistic, projections, interval, log scale, x axis: layer or
normalised depth) and shows what the App
pushes into it: the runs known (for labels), the response-length filter (owned by the App),
whether a computation is running and the theme's darkness. Curves are read through the cache
reader's coalescing channel (a large cache must not freeze the keyboard, and a batch landing
every second during a run only marks the view stale while a read is in flight). Asking for a
length filter is a message: the App owns the filter and its dialog.

The tests of significance behind the chart's marks and the table's "sig" column take longer
than the curves on a big cache (paired tests read every shared sample), so the curves come
first: the chart read hands the tests over only when they are already known for what the runs
have stored (:func:`~layerscope.analysis.compare.memoised_significance_rows`), else the curves
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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from layerscope.analysis.records import ATTENTION_PROJECTIONS, MLP_PROJECTIONS
from layerscope.analysis.statistics import ci95
from layerscope.app.labels import run_labels, run_settings
from layerscope.app.palettes import RUN_MARKERS, run_colours
from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.format import format_length_range
from layerscope.app.tui.messages import (
    ChartLoaded,
    ChartViewChanged,
    LengthFilterRequested,
    PaperTableRequested,
    SignificanceTested,
    SpectraLoaded,
)
from layerscope.app.tui.widgets.comparison_table import ComparisonTable
from layerscope.app.tui.widgets.layer_chart import (
    BAND_LABELS,
    BAND_MODES,
    BandMode,
    ChartSeries,
    Depth,
    LayerChart,
)
from layerscope.app.tui.widgets.spectrum_chart import SpectrumChart

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache
    from layerscope.analysis.records import LayerCurve, RunInfo
    from layerscope.analysis.significance import ProjectionSignificance
    from layerscope.app.tui.export import ChartFigure
    from layerscope.app.tui.services.cache_reader import CacheReader
    from layerscope.app.tui.services.significance_pool import SignificancePool

# The order statistics are cycled in: the paper's headline statistics first.
STATISTICS = (
    "nuclear_norm",
    "sigma1_ratio",
    "frobenius_norm",
    "effective_rank",
    "stable_rank",
    "mean",
    "max",
    "min",
    "nuclear_per_loss",
    "sigma_max",
    "sigma_min",
    "adjacent_cosine",
    "loss",
)


PROJECTION_GROUP = Binding.Group("Proj ", compact=True)


def differing_layers(significance: list[ProjectionSignificance]) -> dict[str, list[int]]:
    """Per projection, the layers where some run differs significantly from the baseline."""
    marks: dict[str, set[int]] = {}
    for row in significance:
        marks.setdefault(row.projection, set()).update(row.differing)
    return {projection: sorted(layers) for projection, layers in marks.items()}


class ComparePane(ReportsWorkerErrors, Vertical):
    """Chart + comparison table for `run_ids`; keys change what is drawn."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "s", "cycle_statistic(1)", "Stat", tooltip="Next statistic", id="chart.statistic_next"
        ),
        Binding(
            "S", "cycle_statistic(-1)", "Previous statistic", show=False, id="chart.statistic_prev"
        ),
        *(
            Binding(
                p,
                f"toggle_projection('{p}')",
                f"Show/hide {p}",
                group=PROJECTION_GROUP,
                id=f"chart.toggle_{p}",
            )
            for p in ATTENTION_PROJECTIONS
        ),
        Binding(
            "m", "toggle_mlp", "MLP", tooltip="Show/hide MLP gate, up, down", id="chart.toggle_mlp"
        ),
        Binding("b", "cycle_band", "CI", tooltip="95% CI: band, error bars, none", id="chart.band"),
        Binding("l", "toggle_log", "Log", tooltip="Log scale on/off", id="chart.log"),
        Binding(
            "f", "length_filter", "Len", tooltip="Response-length filter", id="chart.length_filter"
        ),
        Binding(
            "d",
            "toggle_legend_settings",
            "Details",
            tooltip="Legend: short run labels, or each run with its settings (dtype, limit, ...)",
            id="chart.legend_settings",
        ),
        Binding(
            "x",
            "toggle_depth",
            "Depth",
            tooltip="x axis: layer, or normalised depth layer/(layers-1) (models of any depth)",
            show=False,
            id="chart.depth",
        ),
        Binding(
            "w",
            "toggle_spectra",
            "Spectra",
            tooltip="Singular-value spectra of the first run, first projection shown, by layer, "
            "log-log (runs computed with --spectra); w again: the curves",
            show=False,
            id="chart.spectra",
        ),
        Binding(
            "T",
            "paper_table",
            "Paper table",
            tooltip="The paper's table of the runs drawn: rows model x mode, columns response "
            "types, MAD over all/early/middle/late layers (what the export writes as Markdown)",
            show=False,
            id="chart.paper_table",
        ),
    ]

    def __init__(
        self,
        reader: CacheReader,
        significance: SignificancePool,
        *,
        dark: bool = True,
        mono: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
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
        self._spectra_reads = reader.channel(self, "spectra-load", exclusive=True)
        self.showing_spectra = False
        self.dark = dark
        self.mono = mono  # NO_COLOR; runs are told apart by marker with colour or without
        self.legend_settings = False
        self.computing = False
        self.runs_by_id: dict[str, RunInfo] = {}
        self.run_ids: list[str] = []
        self.metric = "nuclear_norm"
        self.shown_projections: set[str] = set(ATTENTION_PROJECTIONS)
        self.band: BandMode = "none"
        self.log_scale = False
        self.depth: Depth = "layer"
        self.curves: list[LayerCurve] = []  # as last drawn (the figure export draws them)
        self.length_range: tuple[int, int] | None = None
        self.labels: dict[str, str] = {}
        self.colours: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="chart-status", classes="status-line")
        yield LayerChart(id="layer-chart")
        yield SpectrumChart(id="spectrum-chart")
        yield ComparisonTable(id="comparison-table")

    def on_mount(self) -> None:
        self.query_one(SpectrumChart).display = False
        self._update_status()

    # --- what the App pushes in ---------------------------------------------------------------

    def set_runs(self, runs_by_id: dict[str, RunInfo]) -> None:
        """The runs in the cache (labels, MLP check); the App reloads when overlaid ones change."""
        self.runs_by_id = runs_by_id

    def set_computing(self, computing: bool) -> None:
        """Whether a computation is running (what an empty chart says)."""
        if computing != self.computing:
            self.computing = computing
            self._redraw()

    def set_dark(self, dark: bool) -> None:
        """The theme changed: redraw with the palette for it."""
        self.dark = dark
        self._redraw()

    def set_length_range(self, length_range: tuple[int, int] | None) -> None:
        """The response-length filter (owned by the App) changed."""
        self.length_range = length_range
        self.reload()

    # --- what to show -----------------------------------------------------------------------

    def show_runs(self, run_ids: list[str]) -> None:
        """Overlay these runs (in this order; the first is the baseline)."""
        self.run_ids = list(run_ids)
        self._view_changed()
        self.reload()

    def projection_order(self) -> list[str]:
        return [
            p for p in (*ATTENTION_PROJECTIONS, *MLP_PROJECTIONS) if p in self.shown_projections
        ]

    def action_cycle_statistic(self, step: int) -> None:
        position = STATISTICS.index(self.metric) if self.metric in STATISTICS else 0
        self.set_metric(STATISTICS[(position + step) % len(STATISTICS)])

    def set_metric(self, metric: str) -> None:
        self.metric = metric
        self._view_changed()
        self.reload()

    def action_toggle_projection(self, projection: str) -> None:
        if projection in self.shown_projections:
            if len(self.shown_projections) == 1:
                self.notify("At least one projection stays shown.", severity="warning")
                return
            self.shown_projections.discard(projection)
        else:
            self.shown_projections.add(projection)
        self._view_changed()
        self.reload()

    def action_toggle_mlp(self) -> None:
        if any(p in self.shown_projections for p in MLP_PROJECTIONS):
            if self.shown_projections <= set(MLP_PROJECTIONS):
                self.shown_projections |= set(ATTENTION_PROJECTIONS)
            self.shown_projections -= set(MLP_PROJECTIONS)
        else:
            self.shown_projections |= set(MLP_PROJECTIONS)
            if not self._has_mlp():
                self.notify(
                    "No MLP statistics in these runs: compute with module set 'mlp' or 'all'.",
                    severity="warning",
                )
        self._view_changed()
        self.reload()

    def _has_mlp(self) -> bool:
        return any(
            p in MLP_PROJECTIONS
            for run_id in self.run_ids
            for p in getattr(self.runs_by_id.get(run_id), "projections", ())
        )

    def action_cycle_band(self) -> None:
        position = BAND_MODES.index(self.band)
        self.band = BAND_MODES[(position + 1) % len(BAND_MODES)]
        self._view_changed()
        self._redraw()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self._view_changed()
        self._redraw()

    def action_toggle_depth(self) -> None:
        self.depth = "normalised" if self.depth == "layer" else "layer"
        self._view_changed()
        self._redraw()

    def action_toggle_legend_settings(self) -> None:
        self.legend_settings = not self.legend_settings
        self.query_one(LayerChart).show_legend_settings(self.legend_settings)

    def action_paper_table(self) -> None:
        text = self.export_paper_tables().get(f"table-{self.metric}.md")
        if not text:
            self.notify(
                "No table: overlay runs first (two runs of one model, mode and type would share "
                "a cell).",
                severity="warning",
            )
            return
        self.post_message(PaperTableRequested(f"MAD of {self.metric}, the paper's layout", text))

    def action_toggle_spectra(self) -> None:
        self.showing_spectra = not self.showing_spectra
        self.query_one(SpectrumChart).display = self.showing_spectra
        self.query_one(LayerChart).display = not self.showing_spectra
        self._update_status()
        if self.showing_spectra:
            self._reload_spectra()

    def _reload_spectra(self) -> None:
        """Read the spectra of the first run, first projection shown (the w view)."""
        from layerscope.analysis.spectra import run_spectra, spread_layers

        chart = self.query_one(SpectrumChart)
        if not self.run_ids:
            self._spectra_reads.invalidate()
            chart.show([], "", "Select runs to compare (Runs tab, space): w shows their spectra.")
            return
        run_id, projection = self.run_ids[0], self.projection_order()[0]

        def query(cache: ResultsCache) -> SpectraLoaded:
            if projection not in cache.run(run_id).projections:
                return SpectraLoaded(run_id=run_id, projection=projection)
            spectra = run_spectra(cache, run_id, projection)
            drawn = set(spread_layers([s.layer for s in spectra]))
            chosen = [s for s in spectra if s.layer in drawn]
            return SpectraLoaded(
                run_id=run_id, projection=projection, spectra=chosen, layers=len(spectra)
            )

        self._spectra_reads.request(query, SpectraLoaded)

    @reported
    def on_spectra_loaded(self, message: SpectraLoaded) -> None:
        message.stop()
        if not self._spectra_reads.accept(message):
            return
        chart = self.query_one(SpectrumChart)
        run = self.runs_by_id.get(message.run_id)
        label = run_labels([run]).get(run.id, run.short_id) if run else message.run_id[:8]
        if message.error:
            chart.show([], "", f"Could not read the spectra: {message.error}")
            return
        samples = max((max(s.samples, default=0) for s in message.spectra), default=0)
        shown = len(message.spectra)
        layers = "" if shown == message.layers else f", {shown} of {message.layers} layers"
        chart.show(
            message.spectra,
            f"{label} · {message.projection} · mean σ by rank ({samples} samples{layers})",
            f"No spectra in run {label} for {message.projection}: compute it with --spectra "
            "(Setup: spectra), or import a file with S_list (w: the curves).",
        )

    def action_length_filter(self) -> None:
        self.post_message(LengthFilterRequested())

    # --- loading ----------------------------------------------------------------------------

    def _view_changed(self) -> None:
        """The user changed the runs or the view: say so (the App keeps it for the next start)."""
        self._update_status()
        self.post_message(ChartViewChanged())

    def reload(self) -> None:
        """Read the curves again (now, or as soon as the read in flight ends)."""
        self._update_status()
        if self.showing_spectra:
            self._reload_spectra()
        if not self.run_ids:
            self._reads.invalidate()
            self._tests.invalidate()
            self._loaded = self._answered = None
            self._show_empty()
            return
        run_ids = list(self.run_ids)
        metric = self.metric
        projections = self.projection_order()
        length_range = self.length_range

        def query(cache: ResultsCache) -> ChartLoaded:
            # one connection for the whole load (each costs about 20 ms of CPU to open)
            with cache.session():
                return read(cache)

        def read(cache: ResultsCache) -> ChartLoaded:
            from layerscope.analysis.compare import compare_runs, memoised_significance_rows

            # Runs of a request that have not started yet are not in the cache: skip them.
            stored = {run.id for run in cache.runs()}
            present = [run_id for run_id in run_ids if run_id in stored]
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
            return ChartLoaded(
                comparison.curves,
                comparison.mad,
                comparison.relative,
                known,
                pairs=pairs,
                metric=metric,
                response_tokens=length_range,
            )

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
        metric, length_range = loaded.metric, loaded.response_tokens
        tester = self._tester

        def compute() -> SignificanceTested:
            return SignificanceTested(tester.compute(curves, pairs, metric, length_range))

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

    def _redraw(self) -> None:
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
        from layerscope.analysis.compare import normalised_depth

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
        for position, run_id in enumerate(self.run_ids):
            self.colours[run_id] = palette[position % len(palette)]
            markers[run_id] = RUN_MARKERS[position % len(RUN_MARKERS)]
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
                settings=run_settings(runs[curve.run_id]) if curve.run_id in runs else "",
            )
            for curve in curves
        ]
        chart = self.query_one(LayerChart)
        if not self.run_ids:
            chart.placeholder = "Select runs to compare (Runs tab, space) or start a run (r)."
        elif self.computing:
            chart.placeholder = "Computing: the curves appear here as batches land."
        elif self.metric == "adjacent_cosine":
            chart.placeholder = (
                "No per-sample cosines in these runs: computed with --no-cosines, imported "
                "without cosine_sim, or stored before cache schema 3 (s: next statistic)."
            )
        else:
            chart.placeholder = "No data for these runs (or none in this length range)."
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
        from layerscope.analysis.compare import normalised_depth

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

    def _update_status(self) -> None:
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

    # --- kept across sessions (app/tui/state.py) ----------------------------------------------

    def view_settings(self) -> dict[str, Any]:
        """What the chart shows, to be restored at the next start (plain JSON values)."""
        return {
            "metric": self.metric,
            "projections": self.projection_order(),
            "band": self.band,
            "log_scale": self.log_scale,
            "depth": self.depth,
        }

    def restore_view(self, view: Mapping[str, Any]) -> None:
        """The view settings of an earlier session; a value not known here keeps its default."""
        if view.get("metric") in STATISTICS:
            self.metric = view["metric"]
        projections = view.get("projections")
        if isinstance(projections, list):
            known = {p for p in projections if p in (*ATTENTION_PROJECTIONS, *MLP_PROJECTIONS)}
            self.shown_projections = known or self.shown_projections
        if view.get("band") in BAND_MODES:
            self.band = view["band"]
        if isinstance(view.get("log_scale"), bool):
            self.log_scale = view["log_scale"]
        if view.get("depth") in ("layer", "normalised"):
            self.depth = view["depth"]
        self.reload()

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
        """The paper's MAD table (rows model x mode, columns response types) of the curves
        drawn, one table per projection shown, as Markdown and LaTeX: file name -> text. Empty
        when nothing is drawn, or when two runs would share a cell (same model, mode, type)."""
        from layerscope.analysis.tables import paper_table, render_table
        from layerscope.app.labels import short_model

        curves = [c for c in self.curves if c.projection != "loss"]
        drawn = {c.run_id for c in curves}
        infos = [self.runs_by_id[r] for r in self.run_ids if r in drawn and r in self.runs_by_id]
        if not infos:
            return {}
        documents: dict[str, list[str]] = {"md": [], "tex": []}
        try:
            for projection in self.projection_order():
                if not any(c.projection == projection for c in curves):
                    continue
                having = [i for i in infos if any(
                    c.run_id == i.id and c.projection == projection for c in curves
                )]  # fmt: skip
                table = paper_table(having, curves, self.metric, projection, self.length_range)
                documents["md"].append(render_table(table, "markdown", short_model))
                documents["tex"].append(render_table(table, "latex", short_model))
        except ValueError:
            return {}
        return {
            f"table-{self.metric}.{kind}": "\n".join(texts)
            for kind, texts in documents.items()
            if texts
        }

    def export_table_rows(self) -> list[list[str]]:
        return self.query_one(ComparisonTable).csv_rows
