"""The errors layerscope raises on purpose, and the one line a person reads of any error.

Why one root: a front end must tell a mistake the user can fix (a bad option, a missing file, a
cache another version wrote), which it shows as one line, from a bug in layerscope or a failure
inside torch, which it shows as an internal error with its traceback kept. Every error raised on
purpose is a :class:`LayerscopeError`; anything else is unexpected (:func:`is_internal`). The
classes keep the built-in base their callers catch (``ValueError``, ``RuntimeError``), so an
``except ValueError`` written against them still holds.

Why settings are named by a marker: one error reaches the command line, which names a setting by
its option (``--max-length``), and the explorer, which names it as its form does ("max length").
A message written here marks each setting it names with :func:`mention` (its name in the settings
record, ``max_length``); each front end spells the marks its own way through
:meth:`LayerscopeError.describe`, and ``str(error)`` spells them in plain words.

Why one function for the line: the CLI, the explorer, the runner and the cache all promise
one-line errors, and four hand-written copies had already started to differ (type names in one,
``repr`` in another). Every place that reports an error to a person goes through
:func:`one_line`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "LayerscopeError",
    "Naming",
    "QueryError",
    "in_words",
    "is_internal",
    "mention",
    "one_line",
    "quoted",
    "spell",
]

# How a front end names a setting, given its name in the settings record.
Naming = Callable[[str], str]

# NUL cannot occur in a path, and repr() escapes it, so no text a user gave can look like a mark.
_MARK = "\0"
_MENTIONED = re.compile(f"{_MARK}([A-Za-z0-9_]+){_MARK}")


def mention(setting: str) -> str:
    """Where a message names a setting: ``setting`` is its name in the settings record (or, for
    an option of a request that is no setting, such as ``shard``, the request's name for it)."""
    return f"{_MARK}{setting}{_MARK}"


def in_words(setting: str) -> str:
    """A setting's name in plain words: ``max_length`` -> "max length"."""
    return setting.replace("_", " ")


def spell(text: str, name: Naming) -> str:
    """``text`` with each :func:`mention` in it spelled by ``name``."""
    return _MENTIONED.sub(lambda found: name(found.group(1)), text)


class LayerscopeError(Exception):
    """An error layerscope raises on purpose, said in one line: something the user can act on
    (unless it is ``internal``).

    ``setting`` is the setting the error is about, by its name in the settings record
    (``max_length``; by default the first one the message mentions), or None. ``internal`` marks
    the error that only says where an unexpected failure happened (every sample of a chunk
    failed inside torch): front ends show it as an internal error, with the traceback of its
    cause.
    """

    def __init__(
        self, message: str = "", *, setting: str | None = None, internal: bool = False
    ) -> None:
        self.message = message  # with its mentions, for a front end to spell
        first = _MENTIONED.search(message)
        self.setting = setting if setting is not None or first is None else first.group(1)
        self.internal = internal
        super().__init__(spell(message, self.name_in_words))

    def name_in_words(self, setting: str) -> str:
        """How ``str(error)`` names a setting."""
        return in_words(setting)

    def describe(self, name: Naming) -> str:
        """The error's first line with its settings named by ``name``, as a front end says it."""
        return one_line(spell(self.message, name)) if self.message else one_line(self)


class QueryError(LayerscopeError, ValueError):
    """A question about stored results that cannot be answered as asked: a metric, statistic,
    projection or format that is no choice, an empty range, a projection a run does not have."""


def is_internal(error: BaseException) -> bool:
    """Whether ``error`` is a bug, or a failure beneath layerscope, rather than the user's.

    A layerscope error is the user's unless it is marked ``internal``; an ``OSError`` is the
    user's too (a file they named, a full disk); anything else is unexpected.
    """
    if isinstance(error, LayerscopeError):
        return error.internal
    return not isinstance(error, OSError)


def quoted(error: BaseException) -> str:
    """``error`` as the message of an error that wraps it quotes it: a layerscope error's line
    with its settings still marked (the front end names them), anything else's line with its
    type, where the kind of failure is itself the news ("RuntimeError: boom")."""
    if isinstance(error, LayerscopeError) and error.message:
        return one_line(error.message)
    return one_line(error, with_type=True)


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
