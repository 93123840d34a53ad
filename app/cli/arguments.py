"""What a command-line argument means: the types of its values, the settings as options, and
the usage error.

Why apart from the grammar (:mod:`.grammar`): the commands import these (the error to raise,
the type of a value, the settings' values a command was given) and never the whole tree of
commands and options, so no command module depends on another's options. The computing options
are not written in the command line at all: they come from the settings record
(:mod:`layerscope.analysis.base.settings`), so ``compute``, ``check`` and the explorer's form
cannot drift apart in names, choices or defaults; this module only turns each
:class:`~layerscope.analysis.base.setting_schema.Setting` into an ``argparse`` argument (its option as
:mod:`layerscope.app.settings_presentation` spells it) and back.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from layerscope.analysis.base.errors import LayerscopeError, spell
from layerscope.analysis.base.outputs import STDOUT
from layerscope.analysis.base.records import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, name_problem
from layerscope.analysis.base.setting_schema import Setting, SettingError, Surface
from layerscope.analysis.base.settings import offered, profile_values
from layerscope.app.cli.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from layerscope.app.cli.exits import PROG as PROG
from layerscope.app.settings_presentation import flag, option_help, option_name, placeholder


class UsageError(LayerscopeError):
    """A command line that cannot be run as given (exit status 2)."""


# ---- argument types ---------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def token_range(text: str) -> tuple[int, int]:
    try:
        low_text, high_text = text.split("-", 1) if "-" in text else (text, text)
        low = int(low_text) if low_text else 0
        high = int(high_text) if high_text else 2**31 - 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH token counts, got {text!r}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"empty token range {text!r}")
    return low, high


def layer_range(text: str) -> tuple[int, int]:
    """``--layers A-B``: 0-based layers A to B, both included (``5`` is one layer)."""
    try:
        low_text, high_text = text.split("-", 1) if "-" in text else (text, text)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected A-B layer numbers (0-based, both included), got {text!r}"
        ) from None
    if low < 0 or low > high:
        raise argparse.ArgumentTypeError(f"empty or negative layer range {text!r}")
    return low, high


def output_path(text: str) -> Path | str:
    """``--output``: a file, or ``-`` for standard output (``./-`` is a file named -)."""
    if text == STDOUT:
        return STDOUT
    if not text:
        raise argparse.ArgumentTypeError("empty path; give a file name, or - for standard output")
    if text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text} names a folder; give a file name")
    return Path(text)


def names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return parts or None


def run_name(text: str) -> str:
    """A name to file a run under (import's ``--model``, ``--dataset``, ``--type``)."""
    problem = name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def type_list(text: str) -> str:
    """``--types``: comma-separated response types naming at least one (``''`` or ``,,`` would
    otherwise mean every type, the default); the text itself, for :func:`names` to split."""
    if not names(text):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated response types, got {text!r} (leave --types out for "
            "every type)"
        )
    return text


def projections(text: str | None) -> list[str] | None:
    chosen = names(text)
    if chosen is None:
        return None
    known = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
    for name in chosen:
        if name not in known:
            raise UsageError(f"--proj: unknown projection {name!r} (choose from {','.join(known)})")
    return chosen


# ---- settings as arguments --------------------------------------------------------------------


def _setting_type(item: Setting) -> Any:
    def parse(text: str) -> Any:
        try:
            return item.parse(text)
        except SettingError as error:
            raise argparse.ArgumentTypeError(spell(error.reason, option_name)) from None

    parse.__name__ = item.name
    return parse


def add_setting(parser: argparse.ArgumentParser, item: Setting, surface: Surface) -> None:
    """One setting as an option, with the record's choices, default and help."""
    default = item.default_for(surface)
    if item.kind == "flag":
        action = "store_false" if item.default else "store_true"
        parser.add_argument(flag(item), dest=item.name, action=action, help=option_help(item))
        return
    shown = (placeholder(item) or "none") if default is None else default
    parser.add_argument(
        flag(item),
        dest=item.name,
        default=default,
        type=_setting_type(item) if item.kind == "int" else str,
        choices=item.choices or None,
        metavar=None if item.choices else item.name.upper(),
        help=f"{option_help(item)} (default: {shown})",
    )


def add_settings(parser: argparse.ArgumentParser, surface: Surface) -> None:
    for item in offered(surface):
        add_setting(parser, item, surface)


def setting_values(args: argparse.Namespace, surface: Surface) -> dict[str, Any]:
    """The values of the settings a command offers, by setting name (and, for ``check``, what
    it computes with of the others: only what its profile shows)."""
    values = {item.name: getattr(args, item.name) for item in offered(surface)}
    if surface == "check":
        values.update(profile_values())
    return values


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``2m``, ``1.5h``; ``none`` is no limit (infinity)."""
    word = text.strip().lower()
    if word in ("none", "off", "inf"):
        return math.inf
    unit = _DURATION_UNITS.get(word[-1:])
    number = word[:-1] if unit is not None else word
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a time such as 90s, 2m or 1h (or none), got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive time, got {text!r}")
    return value
