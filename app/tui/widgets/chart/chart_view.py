"""The Chart tab's view: what the chart shows, the keys that change it, and keeping it.

Why apart from the pane that reads and draws (compare_view.py): the view is the user's part (a
statistic, the projections, the interval, the log scale, the x axis, the legend's detail) and
what the App pushes in (the runs in the cache, the runs overlaid, the response-length filter);
it is kept across sessions (app/tui/state.py). The pane turns the view into reads and drawings:
a key that changes what is read (statistic, projections) asks for a read, one that changes only
how the data is drawn (interval, log scale, x axis) asks for a redraw, and each posts
``ChartViewChanged`` (the user changed the view; the App saves it for the next start).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.widget import Widget

from layerscope.analysis.base.records import ATTENTION_PROJECTIONS, MLP_PROJECTIONS
from layerscope.app.tui.messages import (
    RUNS_NOT_READ,
    ChartViewChanged,
    LengthFilterRequested,
    PaperTableRequested,
)
from layerscope.app.tui.widgets.chart.layer_chart import BAND_MODES, BandMode, Depth, LayerChart

if TYPE_CHECKING:
    from layerscope.analysis.base.records import RunInfo

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

CHART_BINDINGS: list[BindingType] = [
    Binding("s", "cycle_statistic(1)", "Stat", tooltip="Next statistic", id="chart.statistic_next"),
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
        "p",
        "one_projection",
        "One",
        tooltip="One projection at a time, on the whole width: p again shows the next, after "
        "the last all of them again",
        id="chart.one_projection",
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


class ChartView(Widget):
    """The chart's view as reactives, and its keys. What a read answers (the runs, the statistic,
    the projections, the length filter) funnels into `reload`, which the pane (its subclass,
    compare_view.py) makes one read of however many change in one go; what only changes the
    drawing (interval, log scale, x axis), into `redraw`."""

    BINDINGS: ClassVar[list[BindingType]] = CHART_BINDINGS

    # What the App pushes in: the runs in the cache and the length filter are bound to the
    # App's own (data_bind, browse_tabs.py); the overlaid runs come with `show_runs`.
    runs_by_id: var[Mapping[str, RunInfo]] = var(RUNS_NOT_READ, init=False)
    length_range: var[tuple[int, int] | None] = var(None, init=False)
    run_ids: var[list[str]] = var(list, init=False, always_update=True)
    # The user's choices.
    metric: var[str] = var("nuclear_norm", init=False)
    shown_projections: var[frozenset[str]] = var(frozenset(ATTENTION_PROJECTIONS), init=False)
    band: var[BandMode] = var("none", init=False)
    log_scale: var[bool] = var(False, init=False)
    depth: var[Depth] = var("layer", init=False)
    legend_settings: var[bool] = var(False, init=False)
    # what `p` (one projection at a time) cycles through and then shows again
    _all_projections: list[str] | None = None

    # what the pane does with the view (compare_view.py)
    def reload(self) -> None:
        raise NotImplementedError

    def redraw(self) -> None:
        raise NotImplementedError

    def update_status(self) -> None:
        raise NotImplementedError

    def export_paper_tables(self) -> dict[str, str]:
        raise NotImplementedError

    # --- what a change of the view asks for -----------------------------------------------

    def watch_runs_by_id(
        self, before: Mapping[str, RunInfo], runs_by_id: Mapping[str, RunInfo]
    ) -> None:
        """A scan of the cache: read again when an overlaid run changed (it appeared, its
        counts grew, its status changed); other runs only name what is drawn."""
        if any(before.get(run_id) != runs_by_id.get(run_id) for run_id in self.run_ids):
            self.reload()

    def watch_length_range(
        self, before: tuple[int, int] | None, length_range: tuple[int, int] | None
    ) -> None:
        if length_range != before:  # a bound value comes again unchanged with every push
            self.reload()

    def watch_run_ids(self) -> None:
        self.reload()

    def watch_metric(self) -> None:
        self.reload()

    def watch_shown_projections(self) -> None:
        self.reload()

    def watch_band(self) -> None:
        self.redraw()

    def watch_log_scale(self) -> None:
        self.redraw()

    def watch_depth(self) -> None:
        self.redraw()

    def watch_legend_settings(self, shown: bool) -> None:
        self.query_one(LayerChart).show_legend_settings(shown)

    # --- the runs and the statistic -------------------------------------------------------

    def show_runs(self, run_ids: list[str]) -> None:
        """Overlay these runs (in this order; the first is the baseline)."""
        self.run_ids = list(run_ids)
        self._view_changed()

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

    # --- projections ----------------------------------------------------------------------

    def action_toggle_projection(self, projection: str) -> None:
        if projection in self.shown_projections:
            if len(self.shown_projections) == 1:
                self.notify("At least one projection stays shown.", severity="warning")
                return
            self.shown_projections -= {projection}
        else:
            self.shown_projections |= {projection}
        self._view_changed()

    def action_one_projection(self) -> None:
        """All shown -> the first alone -> the next alone -> ... -> all of them again."""
        order = self.projection_order()
        if len(order) > 1:
            self._all_projections = order
            self.shown_projections = frozenset(order[:1])
        else:
            cycle = self._all_projections or list(ATTENTION_PROJECTIONS)
            position = cycle.index(order[0]) + 1 if order and order[0] in cycle else 0
            if position < len(cycle):
                self.shown_projections = frozenset(cycle[position : position + 1])
            else:
                self.shown_projections = frozenset(cycle)
        self._view_changed()

    def action_toggle_mlp(self) -> None:
        shown = self.shown_projections
        if any(p in shown for p in MLP_PROJECTIONS):
            if shown <= set(MLP_PROJECTIONS):
                shown |= set(ATTENTION_PROJECTIONS)
            shown -= set(MLP_PROJECTIONS)
        else:
            shown |= set(MLP_PROJECTIONS)
            if not self._has_mlp():
                self.notify(
                    "No MLP statistics in these runs: compute with module set 'mlp' or 'all'.",
                    severity="warning",
                )
        self.shown_projections = shown
        self._view_changed()

    def _has_mlp(self) -> bool:
        return any(
            p in MLP_PROJECTIONS
            for run_id in self.run_ids
            for p in getattr(self.runs_by_id.get(run_id), "projections", ())
        )

    # --- how the data is drawn ------------------------------------------------------------

    def action_cycle_band(self) -> None:
        position = BAND_MODES.index(self.band)
        self.band = BAND_MODES[(position + 1) % len(BAND_MODES)]
        self._view_changed()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self._view_changed()

    def action_toggle_depth(self) -> None:
        self.depth = "normalised" if self.depth == "layer" else "layer"
        self._view_changed()

    def action_toggle_legend_settings(self) -> None:
        self.legend_settings = not self.legend_settings

    # --- what the App shows for the view ---------------------------------------------------

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

    def action_length_filter(self) -> None:
        self.post_message(LengthFilterRequested())

    def _view_changed(self) -> None:
        """The user changed the runs or the view: say so (the App keeps it for the next start).
        Only the actions say so: a reactive also changes when data arrives or is restored."""
        self.update_status()
        self.post_message(ChartViewChanged())

    # --- kept across sessions (app/tui/state.py) --------------------------------------------

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
        """The view settings of an earlier session; a value not known here keeps its default.
        Read once whatever changed (the first read of the chart: nothing overlaid yet)."""
        if view.get("metric") in STATISTICS:
            self.metric = view["metric"]
        projections = view.get("projections")
        if isinstance(projections, list):
            known = {p for p in projections if p in (*ATTENTION_PROJECTIONS, *MLP_PROJECTIONS)}
            self.shown_projections = frozenset(known) or self.shown_projections
        if view.get("band") in BAND_MODES:
            self.band = view["band"]
        if isinstance(view.get("log_scale"), bool):
            self.log_scale = view["log_scale"]
        if view.get("depth") in ("layer", "normalised"):
            self.depth = view["depth"]
        self.reload()
