"""The help screen (? or F1): what each tab is for and every key, generated from the bindings.

Built from the live binding tables, so it can never disagree with what the keys do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

INTRO = (
    "layerscope measures, per sample, the gradient of the response loss with respect to each "
    "attention projection (q, k, v, o; optionally the MLP) of each layer, and summarises each "
    "gradient matrix by its singular values. Curves over depth compare fast thinking (bare "
    "answers) with slow thinking (chain of thought), correct with irrelevant responses, and "
    "base with instruct models.\n\n"
    "Setup: pick a model, a dataset and response types, then r. Runs: everything in the cache "
    "(also runs of `layerscope compute` in another terminal); space marks runs to overlay. "
    "Chart: the marked runs, with MAD and relative differences. Cosines: layer-by-layer "
    "gradient similarity. Samples: sort to find the hardest samples, enter to read one. "
    "Log: every error of the session."
)


def binding_table(title: str, bindings: Iterable[Binding]) -> Table:
    table = Table(
        title=title, title_justify="left", title_style="bold", show_header=False, box=None
    )
    table.add_column("key", style="bold", no_wrap=True, min_width=10)
    table.add_column("action")
    for binding in bindings:
        if not binding.description:
            continue
        keys = binding.key_display or ", ".join(
            key.replace("question_mark", "?") for key in binding.key.split(",")
        )
        table.add_row(keys, binding.tooltip or binding.description)
    return table


class HelpScreen(ModalScreen[None]):
    """Intro plus one key table per area; escape, q or ? closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close help", id="help.close"),
    ]

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("layerscope: help (escape closes)", classes="dialog-title")
            yield Static(Text(INTRO), id="help-intro")
            for title, bindings in self.sections:
                yield Static(binding_table(title, bindings), classes="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
