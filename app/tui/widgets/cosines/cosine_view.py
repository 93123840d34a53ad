"""The Cosines tab: a run's layer-by-layer gradient cosine similarity, one projection at a time.

Blocks of layers whose gradients point the same way show up as warm squares; the heatmap is the
mean over the run's samples, which the cache keeps as running sums (cheap to read). Reads go
through the cache reader; the runs known (for the status line) are the App's, bound into this
pane's reactive, and the runs overlaid in the chart (which n steps through, run_choice.py) are
pushed in by the App.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import Static

from layerscope.analysis.base.records import ATTENTION_PROJECTIONS, MLP_PROJECTIONS
from layerscope.app.tui.errors import ReportsWorkerErrors, reported
from layerscope.app.tui.messages import RUNS_NOT_READ, CosinesLoaded
from layerscope.app.tui.widgets.cosines.cosine_heatmap import CosineHeatmap
from layerscope.app.tui.widgets.run_choice import (
    OverlaidRunChoice,
    place,
    run_choice_bindings,
    run_name,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from layerscope.analysis.base.records import RunInfo
    from layerscope.analysis.cache import ResultsCache
    from layerscope.app.tui.services.cache_reader import CacheReader

PROJECTION_GROUP = Binding.Group("Projection ", compact=True)


class CosinePane(ReportsWorkerErrors, OverlaidRunChoice, Vertical):
    """Heatmap of `run_id` for `projection`; q/k/v/o (and g/u/d) switch the projection."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(
                p,
                f"projection('{p}')",
                f"Show projection {p}",
                group=PROJECTION_GROUP,
                id=f"cosines.{p}",
            )
            for p in ATTENTION_PROJECTIONS
        ),
        Binding("g", "projection('gate')", "Show MLP gate", show=False, id="cosines.gate"),
        Binding("u", "projection('up')", "Show MLP up", show=False, id="cosines.up"),
        Binding("d", "projection('down')", "Show MLP down", show=False, id="cosines.down"),
        *run_choice_bindings("cosines"),
    ]

    # The runs in the cache (for the status line's name of the run), bound to the App's
    # (data_bind, browse_tabs.py).
    runs_by_id: var[Mapping[str, RunInfo]] = var(RUNS_NOT_READ, init=False)

    def __init__(self, reader: CacheReader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._reads = reader.channel(self, "cosines-load")
        self.run_id: str | None = None
        self.overlaid: list[str] = []  # the chart's runs, which n steps through
        self.projection = "q"

    def compose(self) -> ComposeResult:
        yield Static("", id="cosine-status", classes="status-line")
        yield CosineHeatmap(id="cosine-heatmap")

    def on_mount(self) -> None:
        self._update_status()

    def show_run(self, run_id: str | None, refresh: bool = False) -> None:
        """Show this run's heatmap (read again when `refresh`: the run is still growing)."""
        if run_id == self.run_id and not refresh:
            return
        self.run_id = run_id
        self.reload()

    def action_projection(self, projection: str) -> None:
        if projection not in (*ATTENTION_PROJECTIONS, *MLP_PROJECTIONS):
            return
        self.projection = projection
        self.reload()

    def reload(self) -> None:
        self._update_status()
        heatmap = self.query_one(CosineHeatmap)
        if self.run_id is None:
            self._reads.invalidate()
            heatmap.placeholder = "No run chosen: pick one in the Runs tab (h)."
            heatmap.show([], "")
            return
        run_id, projection = self.run_id, self.projection

        def query(cache: ResultsCache) -> CosinesLoaded:
            return CosinesLoaded(run_id, projection, cache.layer_cosines(run_id, projection))

        if not heatmap.matrix:  # nothing drawn: say a read is on its way, not "no matrix"
            heatmap.placeholder = f"Reading the layer cosines of projection {projection}…"
            heatmap.refresh()
        self._reads.request(query, lambda: CosinesLoaded(run_id, projection))

    @reported
    def on_cosines_loaded(self, message: CosinesLoaded) -> None:
        message.stop()
        if not self._reads.accept(message):
            return
        heatmap = self.query_one(CosineHeatmap)
        if message.error:
            heatmap.placeholder = f"Could not read the cosines: {message.error}"
        else:
            heatmap.placeholder = (
                f"No layer cosines stored for projection {message.projection} of this run "
                "(computed without cosines, or no samples yet)."
            )
        heatmap.show(
            message.matrix, f"cosine similarity between layers' gradients: {message.projection}"
        )

    def _update_status(self) -> None:
        status = self.query_one("#cosine-status", Static)
        if self.run_id is None:
            status.update("No run chosen." + (" n: the overlaid runs." if self.overlaid else ""))
            return
        name = run_name(self.run_id, self.runs_by_id, self.overlaid)
        status.update(
            Text.assemble(
                (name, "bold"),
                f" · {place(self.run_id, self.overlaid)} · projection {self.projection}",
            )
        )

    def export_rows(self) -> list[list[str]]:
        matrix = self.query_one(CosineHeatmap).matrix
        header = ["layer", *(str(i) for i in range(len(matrix)))]
        return [header, *([str(i), *(repr(v) for v in row)] for i, row in enumerate(matrix))]
