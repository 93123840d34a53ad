"""What a setting is: one option of a computation, how a typed value of it is parsed and
checked, and the error that refuses a value.

Why apart from the record: :mod:`~layerscope.analysis.base.settings` lists every option, a table
that grows with each one; the kind of thing an option is, and the grammar every value goes
through (a whole number, yes or no, one of the choices, a pattern), is the same for all of them
and changes on its own terms.

:class:`SettingError` names the settings its message mentions by their titles. The titles are
the record's, but the record is built from this module, so each :class:`Setting` made makes its
title known here (the record's are all made when it is imported, before any value is checked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from layerscope.analysis.base.errors import LayerscopeError, in_words, mention

__all__ = ["Kind", "Setting", "SettingError", "Surface", "Target"]

Kind = Literal["int", "choice", "text", "flag"]
# Where a setting is offered: the two computing commands and the explorer's settings form.
Surface = Literal["compute", "check", "form"]
# Which record a setting belongs to: the engine's ComputeSettings or the runner's RunRequest.
Target = Literal["compute", "request"]

# Each setting's title by its name, as each Setting is made: how SettingError names them.
_TITLES: dict[str, str] = {}


class SettingError(LayerscopeError, ValueError):
    """A value a setting does not accept: the message is the setting, then ``reason`` (why;
    it may mention other settings).

    Each front end names the setting its own way (``--max-length`` on the command line, "max
    length" in the form); ``str(error)`` names it by its title.
    """

    def __init__(self, item: Setting, reason: str) -> None:
        super().__init__(f"{mention(item.name)}: {reason}")  # about the setting it mentions first
        self.reason = reason

    def name_in_words(self, setting: str) -> str:
        return _TITLES[setting] if setting in _TITLES else in_words(setting)


@dataclass(frozen=True)
class Setting:
    """One option of a computation."""

    name: str  # the attribute on ComputeSettings or RunRequest
    title: str  # how messages name it in words ("max length")
    help: str  # the settings it names are marked (mention): each front end spells them
    kind: Kind
    default: Any
    target: Target
    surfaces: frozenset[Surface]
    choices: tuple[str, ...] = ()
    optional: bool = False  # an empty value means None ("all samples", "the first N")
    minimum: int | None = None
    keyed: bool = False  # enters the run key: it changes the numbers
    # What a quick look uses instead of ``default`` (the explorer's first start and ``check``):
    # a newcomer's first run should take seconds, not an hour.
    quick_default: Any = None
    # What ``check`` computes with, where it does not offer the setting: its profile draws one
    # statistic's curves, so what it never shows (cosines, entry statistics) is not computed.
    profile_value: Any = None
    # A text setting's grammar: (regular expression of the whole value, what it allows).
    pattern: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        _TITLES[self.name] = self.title

    def default_for(self, surface: Surface) -> Any:
        """The default where it is offered: quick looks (form, check) may start smaller."""
        if surface != "compute" and self.quick_default is not None:
            return self.quick_default
        return self.default

    def parse(self, text: str) -> Any:
        """The value of a typed text; SettingError says what is wrong."""
        text = text.strip()
        if self.kind == "flag":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise SettingError(self, f"expected yes or no, got {text!r}")
        if not text:
            if self.optional:
                return None
            raise SettingError(self, "enter a value" if self.kind != "int" else "enter a number")
        if self.kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise SettingError(self, f"expected a whole number, got {text!r}") from None
            return self.check(value)
        return self.check(text)

    def check(self, value: Any) -> Any:
        """``value`` if this setting accepts it; SettingError otherwise."""
        if value is None:
            if self.optional:
                return None
            raise SettingError(self, "a value is required")
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingError(self, f"expected a whole number, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise SettingError(self, f"must be at least {self.minimum}, got {value}")
        elif self.kind == "flag":
            if not isinstance(value, bool):
                raise SettingError(self, f"expected yes or no, got {value!r}")
        elif not isinstance(value, str):
            raise SettingError(self, f"expected text, got {value!r}")
        elif self.choices and value not in self.choices:
            raise SettingError(self, f"choose one of {', '.join(self.choices)}, not {value!r}")
        elif self.pattern is not None and not re.fullmatch(self.pattern[0], value):
            raise SettingError(self, f"expected {self.pattern[1]}, not {value!r}")
        return value
