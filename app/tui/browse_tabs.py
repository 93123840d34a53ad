"""The browsing tabs' widgets (Runs, Chart, Cosines, Samples), made after the first frame.

Why: the explorer opens on the Setup tab, and building these four tabs (a tree, two tables, a
chart, a heatmap) and importing their modules took about half of the time to the first frame.
The App composes their tab panes empty and mounts these widgets into them right after the first
frame is painted; until then the App starts nothing that needs them (the cache scan starts once
they are mounted). The App keeps the references, so it pushes data into them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from layerscope.app.tui.services.cache_reader import CacheReader
    from layerscope.app.tui.services.significance_pool import SignificancePool
    from layerscope.app.tui.widgets.compare_view import ComparePane
    from layerscope.app.tui.widgets.cosine_view import CosinePane
    from layerscope.app.tui.widgets.runs_browser import RunsBrowser
    from layerscope.app.tui.widgets.runs_pane import RunsPane
    from layerscope.app.tui.widgets.samples_view import SamplesPane


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
        from layerscope.app.tui.widgets.compare_view import ComparePane
        from layerscope.app.tui.widgets.cosine_view import CosinePane
        from layerscope.app.tui.widgets.runs_browser import RunsBrowser
        from layerscope.app.tui.widgets.runs_pane import RunsPane
        from layerscope.app.tui.widgets.samples_view import SamplesPane

        runs = RunsBrowser(id="runs-browser")
        return cls(
            runs=runs,
            runs_pane=RunsPane(runs, id="runs-pane"),
            compare=ComparePane(reader, significance, dark=dark, mono=mono, id="compare-pane"),
            cosines=CosinePane(reader, id="cosine-pane"),
            samples=SamplesPane(reader, id="samples-pane"),
        )

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
