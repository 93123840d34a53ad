"""The explorer's whole-screen commands: export what is shown, the help screen, the palette.

Why apart from app.py: each of these reads several tabs (export) or every binding table (help,
palette) and none of it is about routing messages, which is what the App is for. They take the
App as their argument and use only its public parts (query_one, notify, push_screen, actions),
which :class:`Explorer` names: typed by that protocol, this module needs nothing of app.py, which
imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import TabbedContent

from layerscope.app.tui.widgets.chart.chart_view import STATISTICS
from layerscope.app.tui.widgets.chart.compare_view import ComparePane
from layerscope.app.tui.widgets.cosines.cosine_view import CosinePane
from layerscope.app.tui.widgets.frame.log_panel import LogPanel
from layerscope.app.tui.widgets.runs.runs_browser import RunsBrowser
from layerscope.app.tui.widgets.samples.samples_view import SamplesPane

if TYPE_CHECKING:
    from layerscope.analysis.base.records import RunInfo

FoundWidget = TypeVar("FoundWidget", bound=Widget)
ScreenResult = TypeVar("ScreenResult")


class Explorer(Protocol):
    """What these commands use of the explorer's App: Textual's public methods, the runs it
    shows, its cache file and its actions."""

    db_path: Path
    runs_by_id: Mapping[str, RunInfo]

    def query_one(self, selector: type[FoundWidget]) -> FoundWidget: ...

    def notify(self, message: str, *, title: str = "") -> None: ...

    def push_screen(
        self,
        screen: Screen[ScreenResult],
        callback: Callable[[ScreenResult | None], None] | None = None,
    ) -> object: ...

    def action_run(self) -> None: ...

    def action_cancel(self) -> None: ...

    def action_export(self) -> None: ...

    def action_help(self) -> None: ...

    def action_toggle_theme(self) -> None: ...

    def action_show_tab(self, tab: str) -> None: ...

    def scan_cache(self) -> None: ...


# --- export --------------------------------------------------------------------------------


def export_shown(app: Explorer) -> None:
    """Ask for a folder and write what the current tab shows (chart as text and, with the
    figures extra, as the paper's figure in PNG and PDF; tables as CSV; on the Chart tab also
    the paper's MAD table as Markdown and LaTeX)."""
    from layerscope.app.tui.export import FIGURE_FILES, ChartFigure, can_draw_figures
    from layerscope.app.tui.screens.export_dialog import ExportDialog

    tab = app.query_one(TabbedContent).active
    texts: dict[str, str] = {}
    tables: dict[str, list[list[str]]] = {}
    figures: dict[str, ChartFigure] = {}
    documents: dict[str, str] = {}
    if tab == "chart":
        pane = app.query_one(ComparePane)
        texts[f"chart-{pane.metric}"] = pane.export_chart_text()
        tables[f"comparison-{pane.metric}"] = pane.export_table_rows()
        chart = pane.export_figure()
        if chart is not None and can_draw_figures():
            figures[f"figure-{pane.metric}"] = chart
        documents.update(pane.export_paper_tables())
    elif tab == "samples":
        samples = app.query_one(SamplesPane)
        tables[f"samples-{(samples.run_id or 'none')[:12]}"] = samples.export_rows()
    elif tab == "cosines":
        cosines = app.query_one(CosinePane)
        tables[f"cosines-{(cosines.run_id or 'none')[:12]}-{cosines.projection}"] = (
            cosines.export_rows()
        )
    elif tab == "runs":
        tables["runs"] = runs_rows(app.runs_by_id.values())
    elif tab == "log":
        texts["log"] = "\n".join(app.query_one(LogPanel).lines_recorded) + "\n"
    else:
        app.notify("Nothing to export on this tab: go to Chart, Samples, Cosines or Runs.")
        return
    what = ", ".join(
        [f"{name}.txt" for name in texts]
        + [f"{name}.csv" for name in tables]
        + [f"{name}.{kind}" for name in figures for kind in FIGURE_FILES]
        + list(documents)
    )

    def write(folder: Path) -> list[Path]:
        from layerscope.app.tui.export import write_exports

        return write_exports(folder, texts, tables, figures, documents)

    def written(paths: list[Path] | None) -> None:
        if not paths:  # escape: nothing was written
            return
        app.notify("Wrote " + ", ".join(str(path) for path in paths), title="Exported")
        app.query_one(LogPanel).record("exported " + ", ".join(map(str, paths)))

    # The dialog writes, and says there why a folder cannot be used (it stays open).
    app.push_screen(ExportDialog(what, "layerscope-export", write), written)


def write_marked(app: Explorer, run: RunInfo, indices: tuple[int, ...], label: str) -> None:
    """Ask for a folder and write the marked samples' records there as a dataset file (JSON,
    every field as the run's data file has it), which `compute --dataset` reads."""
    from layerscope.app.tui.export import safe_name
    from layerscope.app.tui.screens.export_dialog import ExportDialog

    name = f"{safe_name(run.response_type)}-{run.short_id}-{safe_name(label)}.json"

    def write(folder: Path) -> list[Path]:
        from layerscope.analysis.base.outputs import OutputError
        from layerscope.analysis.cache import ResultsCache
        from layerscope.analysis.datasets import DatasetError
        from layerscope.analysis.results.selection import write_records

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        try:
            write_records(run, indices, path, ResultsCache(app.db_path).files)
        except DatasetError as error:  # the data file is gone or changed: said in the dialog
            raise OutputError(str(error)) from None
        return [path]

    def written(paths: list[Path] | None) -> None:
        if not paths:
            return
        app.notify(f"Wrote {len(indices)} samples to {paths[0]}", title="Exported")
        app.query_one(LogPanel).record(f"wrote {len(indices)} marked samples to {paths[0]}")

    what = f"the {len(indices)} marked samples' records as {name}"
    app.push_screen(ExportDialog(what, "layerscope-export", write), written)


def runs_rows(runs: Iterable[RunInfo]) -> list[list[str]]:
    """The Runs tab as CSV rows (header first)."""
    from layerscope.app.labels import run_settings

    header = ["id", "model", "dataset", "response_type", "mode", "status", "done", "total"]
    rows = [[*header, "settings"]]
    for run in runs:
        rows.append(
            [
                run.id,
                run.model,
                run.dataset,
                run.response_type,
                run.mode,
                run.status,
                str(run.samples_done),
                str(run.samples_total),
                run_settings(run),
            ]
        )
    return rows


# --- help ----------------------------------------------------------------------------------


def bindings_of(owner: Any) -> list[Binding]:
    """The bindings of a class that have an id and a description (what help lists)."""
    return [
        item
        for item in owner.BINDINGS
        if isinstance(item, Binding) and item.id and item.description
    ]


def help_sections(app: Explorer) -> list[tuple[str, list[Binding]]]:
    """Every key, area by area, from the live binding tables."""
    from layerscope.app.tui.screens.sample_detail import SampleDetailScreen

    palette = Binding(
        "ctrl+p", "command_palette", "Command palette: every action by name", id="help.palette"
    )
    return [
        ("Everywhere", [*bindings_of(app), palette]),
        ("Chart tab", bindings_of(ComparePane)),
        ("Runs tab", bindings_of(RunsBrowser)),
        ("Samples tab", bindings_of(SamplesPane)),
        ("Cosines tab", bindings_of(CosinePane)),
        ("Sample detail", bindings_of(SampleDetailScreen)),
    ]


# --- the command palette -------------------------------------------------------------------


def palette_commands(app: Explorer, tabs: Iterable[tuple[str, str]]) -> Iterable[SystemCommand]:
    """The explorer's own entries of the command palette (after Textual's)."""
    yield SystemCommand("Run", "Compute the checked response types (r)", app.action_run)
    yield SystemCommand(
        "Cancel run", "Stop once the batch in flight is stored (c)", app.action_cancel
    )
    yield SystemCommand("Export", "Write what is on screen to files (e)", app.action_export)
    yield SystemCommand("Help", "Keys and what each tab is for (?)", app.action_help)
    yield SystemCommand(
        "Toggle light/dark",
        "Switch between the light and dark theme (t)",
        app.action_toggle_theme,
    )
    for position, (tab, title) in enumerate(tabs, start=1):
        yield SystemCommand(
            f"Go to {title}",
            f"Show the {title} tab ({position})",
            lambda t=tab: app.action_show_tab(t),
        )
    pane = app.query_one(ComparePane)

    def show_statistic(metric: str) -> None:
        pane.set_metric(metric)
        app.action_show_tab("chart")

    for metric in STATISTICS:
        yield SystemCommand(
            f"Chart statistic: {metric}",
            "Show this statistic in the chart (s cycles)",
            lambda m=metric: show_statistic(m),
        )
    yield SystemCommand("Chart: log scale", "Toggle the log y axis (l)", pane.action_toggle_log)
    yield SystemCommand("Chart: interval", "Band, error bars or none (b)", pane.action_cycle_band)
    yield SystemCommand(
        "Chart: response-length filter",
        "Restrict to a token range (f)",
        pane.action_length_filter,
    )
    yield SystemCommand("Chart: MLP", "Show or hide gate/up/down (m)", pane.action_toggle_mlp)
    yield SystemCommand("Refresh runs", "Read the cache again now", app.scan_cache)
