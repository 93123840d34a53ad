"""A choice made in a list of known ones or typed into a path field, checked as it changes.

Why a base class: the model and the dataset pickers offer their choice the same way (a list,
a path field for anything else under it, a check line saying whether what is shown can run)
and follow the same rules between the list and the field: picking in the list empties the
field; typing in the field leaves the list pointing at nothing; an emptied field with nothing
in the list means nothing is chosen, which is said and runs nothing; an answer about text the
field no longer shows is dropped; and the picker has settled once the check of what it shows
has answered (PickerSettled, which the Setup tab waits for before it plans or runs). Written
once here, the two pickers differ only in what they check and what they announce.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from layerscope.app.tui.errors import ReportsWorkerErrors
from layerscope.app.tui.messages import PickerSettled


class ListOrPathPicker(ReportsWorkerErrors, Vertical):
    """Base class: a list ``#KIND-list``, a path field ``#KIND-path``, a check line
    ``#KIND-check``; subclasses say what a choice means (see the hooks below)."""

    KIND: ClassVar[str]  # "model" or "dataset": the widgets' ids and PickerSettled's kind
    TITLE: ClassVar[str]
    PLACEHOLDER: ClassVar[str]
    NOTHING_CHOSEN: ClassVar[str]  # the problem of an empty field with nothing listed chosen

    def __init__(self, initial: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Why what the field shows cannot run (a typed path that is no model, nothing chosen);
        # None when it can.
        self.problem: str | None = None
        # The spec whose check was asked for last and has not answered yet (the initial one
        # from the start): while set, what the field shows is not yet what the picker says.
        self.checking: str | None = initial
        self._entries: list[tuple[str, str]] = []  # (spec, description) of the list

    # --- hooks --------------------------------------------------------------------------------

    def _start_check(self, spec: str, typed: bool) -> None:
        """Check ``spec`` (in a worker), answering with a message that ends in :meth:`_settle`."""
        raise NotImplementedError

    def _list_chose(self, spec: str) -> None:
        """The list's highlighted entry is ``spec`` (the path field is empty by now)."""
        raise NotImplementedError

    def _chose_nothing(self) -> None:
        """Announce that nothing is chosen (the check line says so already)."""
        raise NotImplementedError

    # --- the widgets --------------------------------------------------------------------------

    def compose_choice(self) -> ComposeResult:
        """The title, the list, the path field and the check line."""
        yield Label(self.TITLE, classes="section-title")
        yield OptionList(id=f"{self.KIND}-list", classes="picker-list", compact=True)
        yield Input(
            placeholder=self.PLACEHOLDER,
            id=f"{self.KIND}-path",
            classes="picker-path",
            compact=True,
        )
        yield Static("", id=f"{self.KIND}-check", classes="check-line")

    @property
    def choice_list(self) -> OptionList:
        return self.query_one(f"#{self.KIND}-list", OptionList)

    @property
    def path_field(self) -> Input:
        return self.query_one(f"#{self.KIND}-path", Input)

    @property
    def check_line(self) -> Static:
        return self.query_one(f"#{self.KIND}-check", Static)

    def _list(self, entries: list[tuple[str, str]]) -> list[str]:
        """Show ``entries`` (spec, description) in the list; their specs."""
        self._entries = entries
        options = self.choice_list
        options.clear_options()
        for position, (spec, description) in enumerate(entries):
            prompt = Text.assemble((spec, "bold"), "  ", (description, "dim"))
            options.add_option(Option(prompt, id=f"{self.KIND}-{position}"))
        return [spec for spec, _ in entries]

    def _show_problem(self, message: str) -> None:
        self.check_line.update(Text.assemble(("✗ ", "bold red"), (message, "red")))

    def _refuse(self, problem: str) -> None:
        """What the field shows cannot run: keep why and say it on the check line."""
        self.problem = problem
        self._show_problem(problem)

    # --- the rules between the list and the field ----------------------------------------------

    @on(OptionList.OptionHighlighted, ".picker-list")
    def _list_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        index = event.option_index
        if 0 <= index < len(self._entries):
            spec = self._entries[index][0]
            path_field = self.path_field
            if path_field.value:
                path_field.value = ""  # the list's choice replaces a typed one
            self._list_chose(spec)

    @on(Input.Changed, ".picker-path")
    def _path_typed(self, event: Input.Changed) -> None:
        value = event.value.strip()
        options = self.choice_list
        if value:
            options.highlighted = None  # the typed path is the choice now, not the list's
            self._check(value, typed=True)
        elif options.highlighted is None:
            self._nothing_chosen()

    def _nothing_chosen(self) -> None:
        """The path field was emptied and the list points at nothing: say so, run nothing."""
        self._refuse(self.NOTHING_CHOSEN)
        self._chose_nothing()
        if self.checking is not None:
            self.checking = None
            self.post_message(PickerSettled(self.KIND))

    def _check(self, spec: str, typed: bool = False) -> None:
        self.checking = spec
        self._start_check(spec, typed)

    def _is_current(self, spec: str, typed: bool) -> bool:
        """Whether an answer about ``spec`` is about what the picker shows: not when it was
        typed and the field has changed since."""
        return not typed or spec == self.path_field.value.strip()

    def _settle(self, spec: str) -> None:
        """The check of ``spec`` has answered: settled if it was the last one asked for."""
        if spec == self.checking:
            self.checking = None
            self.post_message(PickerSettled(self.KIND))
