"""Pick the model: the built-in one, recent ones, those in the local Hugging Face cache, or a path.

Everything here reads files only (config.json, tokenizer_config.json): no torch and no network,
so the list and the as-you-type validation ("not a folder", "no config.json", "not a causal LM")
are instant and work even where torch is broken. A hub id that is not cached is usable: the line
says it will be downloaded when the run starts (or, with HF_HUB_OFFLINE=1, how to get it). The instruct mode is offered only when the tokenizer has a chat
template, since instruct mode formats samples with it. The scan and the checks run in thread
workers that post ModelsListed / ModelChecked to the picker, handled on the UI thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import Input, RadioButton, RadioSet

from layerscope.app.tui.messages import ModelChecked, ModelChosen, ModelsListed
from layerscope.app.tui.widgets.setup.list_or_path import ListOrPathPicker
from layerscope.app.tui.widgets.setup.marked_radio_button import MarkedRadioButton

if TYPE_CHECKING:
    from layerscope.analysis.models.inspection import ModelCheck


def human_size(size_bytes: int) -> str:
    """1.2 GB, 340 MB, 7.9 MB: weights size at a glance."""
    if size_bytes <= 0:
        return ""
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def describe_check(check: ModelCheck) -> str:
    """'llama, 4 layers, 7.9 MB, chat template' from a ModelCheck."""
    parts = [check.model_type or "?"]
    if check.num_layers:
        parts.append(f"{check.num_layers} layers")
    if check.size_bytes:
        parts.append(human_size(check.size_bytes))
    if check.has_chat_template:
        parts.append("chat template")
    return ", ".join(parts)


class ModelPicker(ListOrPathPicker):
    """Posts ModelChosen whenever what the field shows changes (`ok` False: nothing usable).

    `problem` says why what the field shows cannot run; `spec` keeps the last usable choice
    for the plan, never for a run.
    """

    KIND = "model"
    TITLE = "Model"
    PLACEHOLDER = "or type a model folder / hub id"
    NOTHING_CHOSEN = "no model chosen (pick one in the list or type a folder / hub id)"

    def __init__(self, initial: str, mode: str, recent: Sequence[str], *, id: str | None = None):
        super().__init__(initial, id=id)
        self.spec = initial
        self.initial_mode = mode
        self.recent = [item for item in recent if item]
        self.has_chat_template = False
        self.ok = False

    def compose(self) -> ComposeResult:
        yield from self.compose_choice()
        with RadioSet(id="mode-set", compact=True):
            yield MarkedRadioButton("base", value=self.initial_mode != "instruct", id="mode-base")
            yield MarkedRadioButton(
                "instruct", value=self.initial_mode == "instruct", id="mode-instruct"
            )

    def on_mount(self) -> None:
        self.check_line.update("Looking for models…")
        self._scan()

    @property
    def mode(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return "instruct" if pressed is not None and pressed.id == "mode-instruct" else "base"

    # --- the list -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="model-scan", exit_on_error=False)
    def _scan(self) -> None:
        from layerscope.analysis.models.inspection import inspect_model_path, list_cached_models
        from layerscope.analysis.models.sources import TINY

        entries: list[tuple[str, str]] = []
        tiny = inspect_model_path(TINY)
        entries.append((TINY, "built-in, " + describe_check(tiny) if tiny.ok else tiny.message))
        cached = list_cached_models()
        cached_names = {model.name for model in cached}
        for spec in self.recent:
            if spec != TINY and spec not in cached_names:
                entries.append((spec, "recent"))
        for model in cached:
            details = [model.model_type or "?"]
            if model.num_layers:
                details.append(f"{model.num_layers} layers")
            if model.size_bytes:
                details.append(human_size(model.size_bytes))
            recent = " recent," if model.name in self.recent else ""
            entries.append((model.name, f"HF cache,{recent} " + ", ".join(details)))
        self.post_message(ModelsListed(entries))

    def on_models_listed(self, message: ModelsListed) -> None:
        message.stop()
        self._fill(message.entries)

    def _fill(self, entries: list[tuple[str, str]]) -> None:
        specs = self._list(entries)
        if self.spec in specs:
            self.choice_list.highlighted = specs.index(self.spec)  # checks it (OptionHighlighted)
        else:
            # Preselected path that is not in the list: show it in the path field.
            self.path_field.value = self.spec

    def _list_chose(self, spec: str) -> None:
        if spec != self.spec or not self.ok or self.problem is not None:
            self.spec = spec
            self._check(spec)

    # --- the path field -----------------------------------------------------------------------

    def _chose_nothing(self) -> None:
        self.post_message(ModelChosen("", False, False))

    @on(Input.Submitted, "#model-path")
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            self._check(value, typed=True)

    def _start_check(self, spec: str, typed: bool) -> None:
        self._inspect(spec, typed)

    @work(thread=True, exclusive=True, group="model-check", exit_on_error=False)
    def _inspect(self, spec: str, typed: bool) -> None:
        from layerscope.analysis.models.inspection import inspect_model_path

        try:
            check = inspect_model_path(spec)
        except Exception as error:  # an unreadable folder must not end the app
            from layerscope.analysis.models.inspection import ModelCheck

            check = ModelCheck(False, f"{spec}: {error!r}")
        self.post_message(ModelChecked(spec, check, typed))

    def on_model_checked(self, message: ModelChecked) -> None:
        message.stop()
        self._checked(message.spec, message.check, message.typed)
        self._settle(message.spec)

    def _checked(self, spec: str, check: ModelCheck, typed: bool) -> None:
        if not self._is_current(spec, typed):
            return  # the field was changed since: this answer is about text no longer shown
        if typed and not check.ok:
            self._refuse(check.message)
            self.post_message(ModelChosen(spec, False, False))
            return
        if typed:
            self.spec = spec
            self.choice_list.highlighted = None
        if spec != self.spec:
            return
        self.ok = check.ok
        self.problem = None if check.ok else check.message
        self.has_chat_template = check.has_chat_template
        line = self.check_line
        if check.download:  # a hub id not cached: said without a network call while typing
            line.update(Text.assemble(("↓ ", "bold yellow"), check.message))
        elif check.ok:
            line.update(Text.assemble(("✓ ", "bold green"), describe_check(check)))
        else:
            self._show_problem(check.message)
        instruct = self.query_one("#mode-instruct", RadioButton)
        instruct.disabled = not check.has_chat_template
        if not check.has_chat_template and instruct.value:
            self.query_one("#mode-base", RadioButton).value = True
        self.post_message(ModelChosen(spec, check.ok, check.has_chat_template, check.num_layers))

    @on(RadioSet.Changed)
    def _mode_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.post_message(ModelChosen(self.spec, self.ok, self.has_chat_template, None))
