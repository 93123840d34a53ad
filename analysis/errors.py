"""Turning an exception into the one line a user reads.

Why one function: the CLI, the explorer, the runner and the cache all promise one-line errors,
and four hand-written copies had already started to differ (type names in one, ``repr`` in
another). Every place that reports an error to a person goes through :func:`one_line`.
"""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(error: BaseException | str, *, with_type: bool = False) -> str:
    """The first line of an error's message; its type name when the message is empty.

    ``with_type`` prefixes the type (``RuntimeError: ...``): for failures recorded against a
    sample, where the kind of failure is itself the news.
    """
    text = str(error).strip().splitlines()
    if isinstance(error, str):
        return text[0] if text else "unknown error"
    name = type(error).__name__
    if not text:
        return name
    return f"{name}: {text[0]}" if with_type else text[0]
