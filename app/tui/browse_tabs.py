"""The browsing tabs' widgets (Runs, Chart, Cosines, Samples), made after the first frame.

Why: the explorer opens on the Setup tab, and building these four tabs (a tree, two tables, a
chart, a heatmap) and importing their modules took about half of the time to the first frame.
The App composes their tab panes empty and mounts these widgets into them right after the first
frame is painted; until then the App starts nothing that needs them (the cache scan starts once
they are mounted). What every tab shows of the cache, the App's one list of runs, and the
response-length filter flow into the panes' own reactives, bound to the App's (`bind`); the
App keeps the references for the rest (the overlaid runs, whether a run computes, the theme).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from textual.dom import DOMNode
    from textual.reactive import Reactive

    from layerscope.analysis.base.records import RunInfo
    from layerscope.app.tui.services.cache_reader import CacheReader
    from layerscope.app.tui.services.significance_pool import SignificancePool
    from layerscope.app.tui.widgets.chart.compare_view import ComparePane
    from layerscope.app.tui.widgets.cosines.cosine_view import CosinePane
    from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
    from layerscope.app.tui.widgets.runs.runs_pane import RunsPane
    from layerscope.app.tui.widgets.samples.samples_view import SamplesPane


@dataclass(frozen=True)
class BrowseTabs:
    """The widgets of the browsing tabs, by role."""

    runs: RunsBrowser
    runs_pane: RunsPane  # the browser and the highlighted run's detail line
    compare: ComparePane
    cosines: CosinePane
    samples: SamplesPane

    @classmethod
    def create(
        cls, reader: CacheReader, significance: SignificancePool, *, dark: bool, mono: bool
    ) -> BrowseTabs:
        from layerscope.app.tui.widgets.chart.compare_view import ComparePane
        from layerscope.app.tui.widgets.cosines.cosine_view import CosinePane
        from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
        from layerscope.app.tui.widgets.runs.runs_pane import RunsPane
        from layerscope.app.tui.widgets.samples.samples_view import SamplesPane

        runs = RunsBrowser(id="runs-browser")
        return cls(
            runs=runs,
            runs_pane=RunsPane(runs, id="runs-pane"),
            compare=ComparePane(reader, significance, dark=dark, mono=mono, id="compare-pane"),
            cosines=CosinePane(reader, id="cosine-pane"),
            samples=SamplesPane(reader, id="samples-pane"),
        )

    def bind(
        self,
        runs_by_id: Reactive[Mapping[str, RunInfo]],
        length_range: Reactive[tuple[int, int] | None],
    ) -> None:
        """Bind the panes' run lists and length filters to the App's reactives: a change of the
        App's flows into each pane's reactive (and its watcher). Called from an App handler,
        after mounting: data_bind binds to the node whose message is being handled."""
        for pane in (self.runs, self.compare, self.cosines, self.samples):
            pane.data_bind(runs_by_id=runs_by_id)
        for pane in (self.compare, self.samples):
            pane.data_bind(length_range=length_range)

    async def mount_into(self, root: DOMNode) -> None:
        """Mount each widget into its (empty) tab pane under `root`: #runs, #chart, ..."""
        from textual.widgets import TabPane

        for pane_id, widget in (
            ("runs", self.runs_pane),
            ("chart", self.compare),
            ("cosines", self.cosines),
            ("samples", self.samples),
        ):
            await root.query_one(f"#{pane_id}", TabPane).mount(widget)
