"""The Setup tab: model, dataset and response types, settings, and the Run button.

Left: model and settings; right: dataset and response types. Everything a run needs is on one
screen, prefilled (first start: the built-in tiny model with the bundled math samples), so a
newcomer's first key press (r) already computes something worth looking at.

Why Tab follows its own order: Textual's follows the layout's order, which went through the
model, then every settings field, and reached the dataset field after 15 presses. Here Tab goes
model, dataset and its response types, then the settings, then Run: the picks first, the
details after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label

from layerscope.app.tui.messages import SettingsChanged
from layerscope.app.tui.state import LastPicks
from layerscope.app.tui.widgets.setup.dataset_picker import DatasetPicker
from layerscope.app.tui.widgets.setup.model_picker import ModelPicker
from layerscope.app.tui.widgets.setup.settings_form import SettingsForm


@dataclass(frozen=True)
class Picks:
    """What the user picked: enough to build a run request."""

    model: str
    model_ok: bool
    dataset: str
    dataset_ok: bool
    types: list[str]
    values: dict[str, Any]  # settings by name (the form's and the mode)
    checking: tuple[str, ...] = ()  # fields whose check has not answered yet ("model", ...)
    # Why what a field shows cannot run (a typed path that is wrong, nothing chosen): a run
    # refuses with it rather than run the last usable choice the field no longer shows.
    model_problem: str | None = None
    dataset_problem: str | None = None


# The Setup tab's parts in the order Tab visits them (see the module's docs).
TAB_ORDER = ("#model-picker", "#dataset-picker", "#settings-form", "#run-button")


class SetupPane(VerticalScroll):
    """Pickers and form; `picks()` reads them (ValueError names a wrong field)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "focus_step(1)", "Next field", show=False, id="setup.next_field"),
        Binding(
            "shift+tab", "focus_step(-1)", "Previous field", show=False, id="setup.previous_field"
        ),
    ]

    def __init__(
        self,
        last: LastPicks,
        recent_models: list[str],
        recent_datasets: list[str],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.last = last
        self.recent_models = recent_models
        self.recent_datasets = recent_datasets

    def compose(self) -> ComposeResult:
        last = self.last
        with Horizontal(id="setup-columns"):
            with Vertical(id="setup-left"):
                yield ModelPicker(
                    last.model, last.values["mode"], self.recent_models, id="model-picker"
                )
                yield Label("Settings", classes="section-title")
                yield SettingsForm(last.values, id="settings-form")
            with Vertical(id="setup-right"):
                yield DatasetPicker(
                    last.dataset,
                    last.types,
                    self.recent_datasets,
                    limit=last.values.get("limit"),
                    id="dataset-picker",
                )
                yield Button(
                    "Run the checked types (r)", id="run-button", variant="primary", compact=True
                )

    def focus_order(self) -> list[Widget]:
        """The pane's focusable widgets in Tab's order (:data:`TAB_ORDER`)."""
        chain = self.screen.focus_chain
        order: list[Widget] = []
        for part in TAB_ORDER:
            container = self.query_one(part)
            order += [w for w in chain if w is container or container in w.ancestors]
        return order

    def action_focus_step(self, step: int) -> None:
        """The next (previous) field in Tab's order; past either end, out of the pane."""
        order = self.focus_order()
        focused = self.screen.focused
        if focused not in order:
            if step > 0:
                self.screen.focus_next()
            else:
                self.screen.focus_previous()
            return
        position = order.index(focused) + step
        if 0 <= position < len(order):
            order[position].focus()
        elif step > 0:  # from Run, the layout's last field too
            self.screen.focus_next()
        else:  # from the model list, the layout's first
            self.screen.focus_previous()

    def picks(self) -> Picks:
        model = self.query_one(ModelPicker)
        dataset = self.query_one(DatasetPicker)
        values = {"mode": model.mode, **self.query_one(SettingsForm).read()}
        return Picks(
            model=model.spec,
            model_ok=model.ok,
            dataset=dataset.dataset,
            dataset_ok=bool(dataset.sources),
            types=dataset.types,
            values=values,
            checking=tuple(
                name
                for name, picker in (("model", model), ("dataset", dataset))
                if picker.checking is not None
            ),
            model_problem=model.problem,
            dataset_problem=dataset.problem,
        )

    def on_settings_changed(self, message: SettingsChanged) -> None:
        """The samples setting decides how many samples run: the type summary says so.

        Not stopped: the App plans again on the same message.
        """
        from layerscope.analysis.base.setting_schema import SettingError
        from layerscope.app.settings_presentation import form_id

        form = self.query_one(SettingsForm)
        picker = self.query_one(DatasetPicker)
        for item in form.settings:
            if item.name == "limit":
                try:
                    picker.set_limit(item.parse(form.query_one(f"#{form_id(item)}", Input).value))
                except SettingError:
                    picker.set_limit(None, known=False)

    def set_cached(self, cached: dict[str, tuple[int, int, bool]]) -> None:
        self.query_one(DatasetPicker).set_cached(cached)
