"""plotext's internals: a figure of one's own.

Why: plotext's public functions draw on one module-level figure, shared global state; each chart
widget of the explorer needs a figure of its own (several are drawn on one screen, and the CLI's
charts use the global one), and plotext makes one only through the private
``plotext._figure._figure_class``, whose methods are the public functions' namesakes. plotext is
imported when the first figure is made, not with this module: the explorer opens without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIBRARY", "missing_internals", "new_figure"]

LIBRARY = "plotext"

# what a figure is asked to do (PlotextChart and the charts drawn on it)
FIGURE_METHODS = (
    "clear_figure",
    "plot_size",
    "build",
    "theme",
    "title",
    "plot",
    "scatter",
    "bar",
    "error",
    "subplots",
    "subplot",
    "xlabel",
    "ylabel",
    "xticks",
    "yticks",
    "xscale",
    "yscale",
)


def new_figure() -> Any:
    """A plotext figure of its own (its methods are plotext's functions, drawing on it)."""
    from plotext._figure import _figure_class

    return _figure_class()


def missing_internals() -> list[str]:
    """What the installed plotext lacks of what this module uses."""
    try:
        from plotext._figure import _figure_class  # noqa: F401 (its presence is the check)
    except ImportError:
        return ["plotext._figure._figure_class"]
    figure = new_figure()
    return [
        f"figure.{name}" for name in FIGURE_METHODS if not callable(getattr(figure, name, None))
    ]
