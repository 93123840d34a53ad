"""How the front ends show the settings: the command line's options, the form's fields, and the
name each gives a setting in a message.

Why here, not in the settings record: the record (:mod:`layerscope.analysis.base.settings`) says what
a setting is (its name, type, default and how a value is checked), which every front end shares;
how a person meets it differs by front end. The command line names ``max_length`` as
``--max-length``; the explorer's form shows it as a field ``#setting-max-length`` labelled "max
len", and its messages say "max length". The core's messages and help texts mark the settings
they name (:func:`~layerscope.analysis.base.errors.mention`); :func:`option_name` and
:func:`form_name` spell those marks for each front end.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerscope.analysis.base.devices import GpuInfo
from layerscope.analysis.base.errors import in_words, spell
from layerscope.analysis.base.setting_schema import Setting
from layerscope.analysis.base.settings import setting

__all__ = [
    "DEVICE_SUGGESTIONS",
    "device_choices",
    "flag",
    "form_help",
    "form_id",
    "form_label",
    "form_name",
    "option_help",
    "option_name",
    "placeholder",
]

# The command-line options not derived from the setting's name.
_OPTIONS = {"init_seed": "--seed"}
# The form's field ids that are not derived from the name (kept stable: tests and users' muscle
# memory use them).
_FORM_IDS = {
    "limit": "setting-samples",
    "sample_seed": "setting-seed",
    "batch_size": "setting-batch",
}
# The form's compact labels where the title is too long for its column.
_FORM_LABELS = {
    "max_length": "max len",
    "batch_size": "batch",
    "init_seed": "rnd seed",
    "device_map": "devmap",
    "max_memory": "max mem",
}
# What an empty optional value means, shown in the form's empty field and the CLI's help.
_PLACEHOLDERS = {
    "limit": "all",
    "sample_seed": "first N",
    "tokens_per_batch": "auto",
    "cpu_threads": "auto",
    "max_memory": "no limit",
    "revision": "main",
}
# What the explorer offers for the device; the CLI takes any torch device string (cuda:1, ...).
DEVICE_SUGGESTIONS = ("auto", "cpu", "cuda", "mps")


def _known(name: str) -> Setting | None:
    try:
        return setting(name)
    except KeyError:
        return None


# ---- the command line -------------------------------------------------------------------------


def flag(item: Setting) -> str:
    """The command-line option; flags that default to on are turned off with ``--no-``."""
    if item.name in _OPTIONS:
        return _OPTIONS[item.name]
    name = item.name.replace("_", "-")
    return f"--no-{name}" if item.kind == "flag" and item.default else f"--{name}"


def option_name(name: str) -> str:
    """How the command line names a setting (or another option of a request: ``shard``)."""
    item = _known(name)
    return flag(item) if item is not None else f"--{name.replace('_', '-')}"


def option_help(item: Setting) -> str:
    """The setting's help text as ``--help`` shows it."""
    return spell(item.help, option_name)


# ---- the explorer -----------------------------------------------------------------------------


def form_name(name: str) -> str:
    """How the explorer names a setting in its messages: the record's title ("max length")."""
    item = _known(name)
    return item.title if item is not None else in_words(name)


def form_help(item: Setting) -> str:
    """The setting's help text as the form's tooltip shows it."""
    return spell(item.help, form_name)


def form_id(item: Setting) -> str:
    """The id of the setting's form field."""
    return _FORM_IDS.get(item.name, f"setting-{item.name.replace('_', '-')}")


def form_label(item: Setting) -> str:
    """The form's label of the setting: compact, its title when that fits."""
    return _FORM_LABELS.get(item.name, item.title)


def placeholder(item: Setting) -> str:
    """What an empty optional value means ("all", "auto"); "" where it is not optional."""
    return _PLACEHOLDERS.get(item.name, "")


def device_choices(suggestions: Sequence[str], gpus: Sequence[GpuInfo]) -> list[tuple[str, str]]:
    """(label, device) pairs for a device picker: the suggestions, each GPU after ``cuda``.

    'cuda:0  NVIDIA H200, free 130.2 GiB of 139.8 GiB' labels a listed GPU; without any
    listed, the suggestions alone.
    """
    choices: list[tuple[str, str]] = []
    for suggestion in suggestions:
        choices.append((suggestion, suggestion))
        if suggestion == "cuda":
            choices.extend((f"{gpu.device}  {gpu.describe()}", gpu.device) for gpu in gpus)
    return choices
