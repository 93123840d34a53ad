"""The Chart tab's w view: the first overlaid run's singular-value spectra instead of the curves.

Why a read of its own: the spectra are another part of the cache than the curves, read for one
run and one projection (the first of each shown) and only while the view is on. A newer read
cancels the one before (exclusive: its answer is for a run or projection no longer shown); the
chart pane reads the spectra again whenever it reads the curves (``reload``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerscope.app.labels import run_labels
from layerscope.app.tui.errors import reported
from layerscope.app.tui.messages import SpectraLoaded
from layerscope.app.tui.widgets.chart.chart_view import ChartView
from layerscope.app.tui.widgets.chart.layer_chart import LayerChart
from layerscope.app.tui.widgets.chart.spectrum_chart import SpectrumChart

if TYPE_CHECKING:
    from layerscope.analysis.cache import ResultsCache
    from layerscope.app.tui.services.cache_reader import CacheReader


class SpectraView(ChartView):
    """The w key and the spectra's reads; `showing_spectra` says which chart is shown."""

    def __init__(self, reader: CacheReader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._spectra_reads = reader.channel(self, "spectra-load", exclusive=True)
        self.showing_spectra = False

    def action_toggle_spectra(self) -> None:
        self.showing_spectra = not self.showing_spectra
        self.query_one(SpectrumChart).display = self.showing_spectra
        self.query_one(LayerChart).display = not self.showing_spectra
        self.update_status()
        if self.showing_spectra:
            self.reload_spectra()

    def reload_spectra(self) -> None:
        """Read the spectra of the first run, first projection shown (the w view)."""
        from layerscope.analysis.results.spectra import run_spectra, spread_layers

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
            f"No spectra in run {label} for {message.projection}: it was computed without "
            "them. Compute it again with spectra on (Setup: spectra; `layerscope compute "
            "--spectra`), or import a file with S_list (w: the curves).",
        )
