"""Textual's internals: the footer's parts and whether the app is quitting.

Why each is needed: :class:`~layerscope.app.tui.widgets.frame.fitted_footer.FittedFooter` hides the
entries of the footer's row that do not fit, which needs the classes the row is made of
(``FooterKey``, ``KeyGroup``, ``FooterLabel``), public only inside ``textual.widgets._footer``;
and a screen update still queued while the app quits must be dropped, not fail on widgets
already gone, but Textual says whether it is quitting only in ``App._exit`` (``exit()`` was
called) and ``App._closing`` (shutting down).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

__all__ = [
    "LIBRARY",
    "FooterKey",
    "FooterLabel",
    "KeyGroup",
    "is_quitting",
    "missing_internals",
]

LIBRARY = "textual"

try:
    from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup
except ImportError as error:
    raise ImportError(
        f"textual {version('textual')} no longer offers textual.widgets._footer's FooterKey, "
        f"FooterLabel and KeyGroup, which layerscope.app.compat.textual uses ({error})"
    ) from error


def is_quitting(app: Any) -> bool:
    """Whether ``app`` (a running Textual App) was asked to exit or is shutting down."""
    return bool(app._exit or app._closing)


def missing_internals() -> list[str]:
    """What the installed Textual lacks of what this module uses (and how it is used)."""
    from textual.app import App

    missing = []
    if "action" not in inspect.signature(FooterKey.__init__).parameters:
        missing.append("FooterKey(action=...)")  # FittedFooter finds the help key by its action
    app = App[None]()
    for name in ("_exit", "_closing"):
        if not isinstance(getattr(app, name, None), bool):
            missing.append(f"App.{name} (a bool)")
    return missing
