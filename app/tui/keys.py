"""The explorer's App-wide keys, its tabs, themes and timings: one table each.

Why apart from the App: the help screen, the footer and the command palette all list these
bindings (each with a description, an id and a tooltip), and a key is easiest to check in one
place read at a glance; the per-tab keys live with their widgets, where help follows the focus.
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

TABS = (
    ("setup", "Setup"),
    ("runs", "Runs"),
    ("chart", "Chart"),
    ("cosines", "Cosines"),
    ("samples", "Samples"),
    ("log", "Log"),
)
TAB_GROUP = Binding.Group("Tabs", compact=True)
DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"
POLL_SECONDS = 2.0
PROGRESS_LINGER = 8.0  # seconds the bars of a completed run stay up


APP_BINDINGS: list[BindingType] = [
    Binding(
        "question_mark,f1",
        "help",
        "Help",
        key_display="?",
        tooltip="This help: keys and what each tab is for (also F1)",
        id="app.help",
    ),
    Binding("r", "run", "Run", tooltip="Compute the checked response types", id="app.run"),
    # r is a letter in a text field: ctrl+r runs from anywhere, a path field included
    Binding(
        "ctrl+r",
        "run",
        "Run (also from a text field)",
        show=False,
        priority=True,
        tooltip="Compute the checked response types, whatever has focus",
        id="app.run_anywhere",
    ),
    Binding(
        "c",
        "cancel",
        "Cancel",
        tooltip="Stop once the batch in flight is stored (finished samples kept)",
        id="app.cancel",
    ),
    *(
        # Not in the footer: the tab titles show their numbers.
        Binding(
            str(n),
            f"show_tab('{tab}')",
            f"{title} tab",
            show=False,
            group=TAB_GROUP,
            id=f"app.tab_{tab}",
        )
        for n, (tab, title) in enumerate(TABS, start=1)
    ),
    Binding(
        "e",
        "export",
        "Export",
        tooltip="Write what is on screen: chart as text, tables as CSV",
        id="app.export",
    ),
    Binding("t", "toggle_theme", "Theme", tooltip="Light or dark theme", id="app.theme"),
    Binding("ctrl+q", "quit", "Quit", priority=True, id="app.quit"),
]
