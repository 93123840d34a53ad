"""The runs browser: every run in the cache as model > dataset > response type.

Each leaf is one run with its status and counts, so a run started by `layerscope compute` in
another terminal shows up (and its counts grow) while it is still running: the tree follows
the App's runs, bound into its reactive, and is rebuilt when a scan brings other records. The
counts are of what the run's request asked for (`--limit 16`: 12/16), not of the data file's
size, which only the detail line says. A running run's rate and ETA come from the successive
scans themselves (a PaceTracker, analysis/runs/pace.py), since its computing process reports
its progress to itself alone. Runs marked with a dot are overlaid in the chart; space toggles
the mark, enter shows the chart. The Runs tab (runs_pane.py) shows the highlighted run's id,
settings and counts below the tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from layerscope.analysis.datasets.sources import TYPE_ORDER
from layerscope.analysis.runs.pace import Pace, PaceTracker
from layerscope.app.labels import short_model
from layerscope.app.tui.format import format_duration, sample_rate
from layerscope.app.tui.messages import RUNS_NOT_READ, ComparisonChanged, RunFocused

STATUS_STYLES = {
    "complete": "green",
    "running": "bold yellow",
    "cancelled": "magenta",
    "failed": "bold red",
}


def type_sort_key(response_type: str) -> tuple[int, str, str]:
    """Paper order (none, simplified, detailed), correct before irrelevant, then by name."""
    irrelevant = response_type.endswith("_irrelevant")
    base = response_type.removesuffix("_irrelevant")
    return (TYPE_ORDER.get(base, 9), base, "1" if irrelevant else "0")


def run_counts(run: Any, pace: Pace | None = None, *, of_file: bool = False) -> str:
    """'12/16' (samples handled of those requested) plus skipped/failed counts when there are
    any, 'of 40 in the file' (`of_file`) when fewer were requested than the file holds, and a
    running run's rate and ETA ('· 0.8/s · ETA 5s') when its `pace` is known."""
    requested = run.samples_requested
    text = f"{run.samples_handled}/{requested}"
    extra = []
    if of_file and requested < run.samples_total:
        extra.append(f"of {run.samples_total} in the file")
    if run.samples_skipped:
        extra.append(f"{run.samples_skipped} skipped")
    if run.samples_failed:
        extra.append(f"{run.samples_failed} failed")
    text += f" ({', '.join(extra)})" if extra else ""
    if pace is not None:
        text += f" · {sample_rate(pace.rate)}"
        if pace.eta_seconds is not None:
            text += f" · ETA {format_duration(pace.eta_seconds)}"
    return text


class RunsBrowser(Tree[str]):
    """A tree whose leaves carry run ids; keeps the compare selection (in order)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_compare", "Compare", id="runs.toggle_compare"),
        Binding("enter", "open_chart", "Chart", id="runs.open_chart"),
        Binding("s", "open_samples", "Samples", id="runs.open_samples"),
        Binding("h", "open_cosines", "Heatmap", id="runs.open_cosines"),
        Binding("u", "clear_compare", "Uncheck all", id="runs.clear_compare"),
    ]

    # The runs in the cache by id, bound to the App's (data_bind, browse_tabs.py).
    runs_by_id: var[Mapping[str, Any]] = var(RUNS_NOT_READ, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("Runs in the cache", id=id)
        self.show_root = False
        self.guide_depth = 3
        self.runs: list[Any] = []
        self.selected: list[str] = []
        # The running runs' rates and ETAs, told by the successive scans (analysis/runs/pace.py).
        self.tracker = PaceTracker()
        self.paces: dict[str, Pace] = {}

    def watch_runs_by_id(self, runs_by_id: Mapping[str, Any]) -> None:
        if runs_by_id is RUNS_NOT_READ:  # before the first scan the tree stays empty
            return
        runs = list(runs_by_id.values())
        paces = self.tracker.observe(runs, datetime.now(timezone.utc))
        paces_changed, self.paces = paces != self.paces, paces
        if not self.update_runs(runs) and paces_changed:
            self._relabel()
            node = self.cursor_node
            if node is not None and node.data in paces:  # the detail line shows the pace too
                self.post_message(self.NodeHighlighted(node))

    def update_runs(self, runs: Sequence[Any]) -> bool:
        """Rebuild the tree from RunInfo records, keeping the cursor on the same run; False
        when they are the records it shows already."""
        runs = list(runs)
        if runs == self.runs and self.root.children:
            return False
        # The selection keeps ids not stored yet: runs of a request that has not reached them.
        self.runs = runs
        current = self.cursor_node.data if self.cursor_node is not None else None
        self.clear()
        if not runs:
            self.root.add_leaf(Text("No runs yet: start one on the Setup tab (r).", style="italic"))
            return True
        by_model: dict[str, dict[str, list[Any]]] = {}
        for run in runs:
            by_model.setdefault(run.model, {}).setdefault(run.dataset, []).append(run)
        target: TreeNode[str] | None = None
        first_leaf: TreeNode[str] | None = None
        for model in sorted(by_model):
            datasets = by_model[model]
            count = sum(len(items) for items in datasets.values())
            model_node = self.root.add(
                Text.assemble((short_model(model), "bold"), f"  {count} run{'s' * (count != 1)}"),
                expand=True,
            )
            for dataset in sorted(datasets):
                dataset_node = model_node.add(Text(dataset), expand=True)
                ordered = sorted(
                    datasets[dataset], key=lambda r: (type_sort_key(r.response_type), r.mode, r.id)
                )
                for run in ordered:
                    leaf = dataset_node.add_leaf(self._leaf_label(run), data=run.id)
                    first_leaf = first_leaf or leaf
                    if run.id == current:
                        target = leaf
        target = target or first_leaf
        if target is not None:
            self.call_after_refresh(self._highlight, target)
        return True

    def _highlight(self, node: TreeNode[str]) -> None:
        """Put the cursor on `node` of the rebuilt tree, and say so even when its line is the
        one the cursor was on: the run's record changed (counts, time), so must its detail."""
        line = self.cursor_line
        self.move_cursor(node)
        if self.cursor_line == line:
            self.post_message(self.NodeHighlighted(node))

    def _leaf_label(self, run: Any) -> Text:
        marked = run.id in self.selected
        label = Text()
        label.append("● " if marked else "○ ", style="bold" if marked else "dim")
        label.append(f"{run.response_type:<26} ")
        label.append(f"{run.mode:<8} ")
        label.append(f"{run.status:<9} ", style=STATUS_STYLES.get(run.status, ""))
        label.append(run_counts(run, self.paces.get(run.id)), style="dim")
        return label

    def _relabel(self) -> None:
        runs = {run.id: run for run in self.runs}

        def visit(node: TreeNode[str]) -> None:
            for child in node.children:
                if child.data in runs:
                    child.set_label(self._leaf_label(runs[child.data]))
                visit(child)

        visit(self.root)

    def current_run(self) -> str | None:
        node = self.cursor_node
        return node.data if node is not None and node.data else None

    def set_selected(self, run_ids: Sequence[str]) -> None:
        """Mark exactly these runs (the app's comparison), without posting a change."""
        self.selected = list(run_ids)
        self._relabel()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.node.data:
            self.post_message(RunFocused(event.node.data))

    def _run_or_toggle(self) -> str | None:
        """The run under the cursor; on a group (model, dataset) it opens or closes instead."""
        run_id = self.current_run()
        if run_id is None:
            node = self.cursor_node
            if node is not None and node.allow_expand:
                node.toggle()
        return run_id

    def action_toggle_compare(self) -> None:
        run_id = self._run_or_toggle()
        if run_id is None:
            return
        if run_id in self.selected:
            self.selected.remove(run_id)
        else:
            self.selected.append(run_id)
        self._relabel()
        self.post_message(ComparisonChanged(list(self.selected)))

    def action_clear_compare(self) -> None:
        self.selected = []
        self._relabel()
        self.post_message(ComparisonChanged([]))

    def _open(self, tab: str) -> None:
        run_id = self._run_or_toggle()
        if run_id is None:
            return
        if tab == "chart" and run_id not in self.selected:
            self.selected.append(run_id)
            self._relabel()
            self.post_message(ComparisonChanged(list(self.selected)))
        self.post_message(RunFocused(run_id, open_tab=tab))

    def action_open_chart(self) -> None:
        self._open("chart")

    def action_open_samples(self) -> None:
        self._open("samples")

    def action_open_cosines(self) -> None:
        self._open("cosines")
