"""One sample up close: its prompt and response, and its curve over the run's mean.

Opened from the samples table. Keys switch the projection (q/k/v/o, gate/up/down when measured)
and the statistic, so a user can see where in depth a hard sample departs from the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from layerscope.analysis.records import ATTENTION_PROJECTIONS, MATRIX_STATISTICS
from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.messages import SampleCurveLoaded
from layerscope.app.tui.widgets.comparison_table import number
from layerscope.app.tui.widgets.sample_chart import SampleChart


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

    def __init__(self, run_id: str, row: Any, run_label: str, metric: str = "nuclear_norm") -> None:
        super().__init__()
        self.run_id = run_id
        self.row = row
        self.run_label = run_label
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
                yield SampleChart(id="sample-chart")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        run = getattr(self.app, "runs_by_id", {}).get(self.run_id)
        if run is not None and run.projections:
            self.projections = tuple(run.projections)
            if self.projection not in self.projections:
                self.projection = self.projections[0]
        self._request()

    def _request(self) -> None:
        chart = self.query_one(SampleChart)
        chart.placeholder = "Loading the sample's curve…"
        db_path = Path(self.app.db_path)  # type: ignore[attr-defined]
        self._load(db_path, self.run_id, self.row.index, self.metric, self.projection)

    @work(thread=True, exclusive=True, group="sample-curve", exit_on_error=False)
    def _load(self, db_path: Path, run_id: str, index: int, metric: str, projection: str) -> None:
        from layerscope.analysis.cache import CacheError, ResultsCache

        try:
            with ResultsCache(db_path) as cache:
                sample = cache.sample_curve(run_id, index, metric, projection)
                curves = cache.curves([run_id], metric, [projection])
        except (CacheError, ValueError, OSError) as error:
            self.post_message(
                SampleCurveLoaded(run_id, index, metric, projection, [], [], error=str(error))
            )
            return
        mean = list(curves[0].mean) if curves else []
        self.post_message(SampleCurveLoaded(run_id, index, metric, projection, sample, mean))

    @reported
    def on_sample_curve_loaded(self, message: SampleCurveLoaded) -> None:
        message.stop()
        if (message.metric, message.projection) != (self.metric, self.projection):
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
