"""One sample up close: its prompt and response, and its curve over the run's mean.

Opened from the samples table. Keys switch the projection (q/k/v/o, gate/up/down when measured)
and the statistic, so a user can see where in depth a hard sample departs from the rest. The App
opens it (on SampleOpened) with everything it shows: the run's record, the theme's darkness and
the cache reader its curves are read through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from layerscope.analysis.base.records import ATTENTION_PROJECTIONS, MATRIX_STATISTICS
from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.format import number
from layerscope.app.tui.messages import SampleCurveLoaded
from layerscope.app.tui.widgets.frame.fitted_footer import FittedFooter
from layerscope.app.tui.widgets.samples.sample_chart import SampleChart

if TYPE_CHECKING:
    from layerscope.analysis.base.records import RunInfo, SampleRow
    from layerscope.analysis.cache import ResultsCache
    from layerscope.app.tui.services.cache_reader import CacheReader


class SampleDetailScreen(ReportsWorkerErrors, Screen[None]):
    """Text on the left, chart on the right; escape closes. A full screen: every cell counts."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="sample.close"),
        Binding("p", "next_projection", "Projection", id="sample.projection"),
        Binding("s", "next_statistic(1)", "Statistic", id="sample.statistic"),
        Binding(
            "S", "next_statistic(-1)", "Prev statistic", show=False, id="sample.statistic_prev"
        ),
    ]

    def __init__(
        self,
        reader: CacheReader,
        run_id: str,
        row: SampleRow,
        run_label: str,
        metric: str = "nuclear_norm",
        *,
        run: RunInfo | None = None,
        dark: bool = True,
    ) -> None:
        super().__init__()
        self._reads = reader.channel(self, "sample-curve", exclusive=True)
        self.run_id = run_id
        self.row = row
        self.run_label = run_label
        self.run = run
        self.dark = dark
        self.metric = metric if metric in MATRIX_STATISTICS else "nuclear_norm"
        self.projections: tuple[str, ...] = ATTENTION_PROJECTIONS
        self.projection = "q"

    def compose(self) -> ComposeResult:
        row = self.row
        with Vertical(id="sample-dialog"):
            yield Label(
                f"Sample {row.index} of {self.run_label}", id="sample-title", classes="dialog-title"
            )
            yield Static(
                f"loss {number(row.loss)} · response {row.response_tokens} tokens · prompt "
                f"{row.prompt_tokens} tokens · nuclear norm {number(row.stats.get('nuclear_norm', float('nan')))}"
                f" · effective rank {number(row.stats.get('effective_rank', float('nan')))}",
                id="sample-summary",
            )
            with Horizontal(id="sample-body"):
                with VerticalScroll(id="sample-text"):
                    yield Label("Prompt", classes="section-title")
                    yield Static(row.instruction, id="sample-prompt", markup=False)
                    yield Label("Response", classes="section-title")
                    yield Static(row.output, id="sample-response", markup=False)
                yield SampleChart(dark=self.dark, id="sample-chart")
        yield FittedFooter()

    def on_mount(self) -> None:
        run = self.run
        if run is not None and run.projections:
            self.projections = tuple(run.projections)
            if self.projection not in self.projections:
                self.projection = self.projections[0]
        self._request()

    def set_dark(self, dark: bool) -> None:
        """The theme changed while the screen is open."""
        self.dark = dark
        self.query_one(SampleChart).set_dark(dark)

    def _request(self) -> None:
        chart = self.query_one(SampleChart)
        chart.placeholder = "Loading the sample's curve…"
        run_id, index, metric, projection = (
            self.run_id,
            self.row.index,
            self.metric,
            self.projection,
        )

        def query(cache: ResultsCache) -> SampleCurveLoaded:
            sample = cache.sample_curve(run_id, index, metric, projection)
            curves = cache.curves([run_id], metric, [projection])
            mean = list(curves[0].mean) if curves else []
            return SampleCurveLoaded(run_id, index, metric, projection, sample, mean)

        self._reads.request(query, lambda: SampleCurveLoaded(run_id, index, metric, projection))

    @reported
    def on_sample_curve_loaded(self, message: SampleCurveLoaded) -> None:
        message.stop()
        if not self._reads.accept(message):
            return
        chart = self.query_one(SampleChart)
        if message.error:
            chart.placeholder = f"Could not read the curve: {message.error}"
            chart.show([], [], "")
            return
        chart.show(message.sample, message.mean, f"{self.projection}: {self.metric}")

    def action_next_projection(self) -> None:
        position = (
            self.projections.index(self.projection) if self.projection in self.projections else -1
        )
        self.projection = self.projections[(position + 1) % len(self.projections)]
        self._request()

    def action_next_statistic(self, step: int) -> None:
        position = MATRIX_STATISTICS.index(self.metric)
        self.metric = MATRIX_STATISTICS[(position + step) % len(MATRIX_STATISTICS)]
        self._request()

    def action_close(self) -> None:
        self.dismiss(None)
