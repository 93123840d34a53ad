"""The run settings form: one compact field per setting the settings record offers the form.

Why built from the record: the fields, their order, choices, first-start values and how a typed
value is checked are all :mod:`layerscope.analysis.base.settings`'s, the same record the command line
is built from, so the two cannot drift; the fields' ids, labels and placeholders are the
explorer's (:mod:`layerscope.app.settings_presentation`). Each field is one compact line so the whole
form fits an 80x24 terminal next to the pickers. ``read()`` returns checked values by setting
name and names the field that is wrong. The device field also lists each GPU with its free
memory when the optional nvidia-ml-py can tell (:mod:`layerscope.analysis.base.devices`).

"GPUs" is the one field that depends on the machine: it is offered only where more than one
GPU is visible (:func:`~layerscope.app.tui.services.gpus.visible_gpu_count`), as a choice of
1..N; elsewhere the form has no such row and a request computes on one device, in-process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Input, Label, Select

from layerscope.analysis.base.setting_schema import Setting, SettingError
from layerscope.analysis.base.settings import offered
from layerscope.app.settings_presentation import (
    DEVICE_SUGGESTIONS,
    device_choices,
    form_help,
    form_id,
    form_label,
    form_name,
    placeholder,
)
from layerscope.app.tui.messages import SettingsChanged
from layerscope.app.tui.services.gpus import visible_gpu_count


def _choices(item: Setting, gpus: int) -> list[tuple[str, str]]:
    """(label, value) pairs of a choice field; the device's list each GPU NVML reports with
    its free memory ("cuda:0  NVIDIA H200, free 130.2 GiB of 139.8 GiB"), when it can, and
    GPUs offers 1..N of the visible ones."""
    if item.name == "gpus":
        return [(str(n), str(n)) for n in range(1, gpus + 1)]
    if item.name == "device":
        from layerscope.analysis.base.devices import list_gpus

        return device_choices(DEVICE_SUGGESTIONS, list_gpus())
    if item.kind == "flag":
        return list(FLAG_CHOICES)
    return [(choice, choice) for choice in item.choices]


# A flag is a choice of two words, one compact line like the other fields (a checkbox takes
# three rows, and a text field showed Python's "False").
FLAG_CHOICES = (("on", "on"), ("off", "off"))


class ParsedBy(Validator):
    """Valid when the setting parses the text (its own check: whole numbers, bounds, grammar)."""

    def __init__(self, item: Setting) -> None:
        super().__init__()
        self.item = item

    def validate(self, value: str) -> ValidationResult:
        try:
            self.item.parse(value)
        except SettingError as error:
            return self.failure(error.describe(form_name))
        return self.success()


class SettingsForm(Grid):
    """A two-column grid of labels and compact inputs, one row per offered setting."""

    def __init__(
        self, values: Mapping[str, Any], *, id: str | None = None, gpus: int | None = None
    ) -> None:
        super().__init__(id=id)
        self.gpus = visible_gpu_count() if gpus is None else gpus
        # the record's order, flags last: their on/off fields close the grid (two columns of
        # fields, so a setting that came earlier would move every later one across)
        self.settings = tuple(
            sorted(
                (item for item in offered("form") if item.name != "gpus" or self.gpus > 1),
                key=lambda item: item.kind == "flag",
            )
        )
        self._initial = {
            item.name: values.get(item.name, item.default_for("form")) for item in self.settings
        }
        self._invalid: set[str] = set()  # ids of the inputs whose text does not parse

    def compose(self) -> ComposeResult:
        for position, item in enumerate(self.settings):
            yield Label(form_label(item), classes="second-column" if position % 2 else "")
            yield self._field(item, self._initial[item.name])

    def _field(self, item: Setting, value: Any) -> Widget:
        choices = _choices(item, self.gpus)
        if choices:
            default = item.default_for("form")
            if item.kind == "int":
                value, default = str(value), str(default)
            elif item.kind == "flag":
                value, default = ("on" if value else "off"), ("on" if default else "off")
            values = [choice for _label, choice in choices]
            return Select(
                choices,
                value=value if value in values else default,
                allow_blank=False,
                id=form_id(item),
                compact=True,
                tooltip=form_help(item),
            )
        # A text input for numbers too: an integer input drops what is not a digit as it is
        # typed (a path typed into the seed became 5008); the value is checked instead, and a
        # field that does not parse is marked invalid with the setting's own message.
        return Input(
            "" if value is None else str(value),
            placeholder=placeholder(item),
            id=form_id(item),
            compact=True,
            tooltip=form_help(item),
            validators=[ParsedBy(item)],
            validate_on=["changed", "submitted"],
        )

    def read(self) -> dict[str, Any]:
        """The checked values by setting name; ValueError names the field that is wrong."""
        values: dict[str, Any] = {}
        for item in self.settings:
            field = self.query_one(f"#{form_id(item)}")
            try:
                if isinstance(field, Select) and item.kind == "flag":
                    values[item.name] = field.value == "on"
                elif isinstance(field, Select) and item.kind == "int":
                    values[item.name] = item.parse(str(field.value))
                elif isinstance(field, Select):
                    values[item.name] = item.check(str(field.value))
                else:
                    assert isinstance(field, Input)
                    values[item.name] = item.parse(field.value)
            except SettingError as error:
                raise ValueError(error.describe(form_name)) from None
        return values

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        # said once as a field turns invalid (marked while it stays so), not at every key
        result, name = event.validation_result, event.input.id or ""
        if result is not None and not result.is_valid:
            if name not in self._invalid:
                self._invalid.add(name)
                self.notify(result.failure_descriptions[0], severity="warning", timeout=4)
        else:
            self._invalid.discard(name)
        self.post_message(SettingsChanged())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(SettingsChanged())
