"""How the explorer says an error, and a guard for handlers that turn cached data into widgets.

Why one place: the explorer meets errors in its run worker, its plan and cache-read workers and
its message handlers. A layerscope error is the user's to act on and reads as the explorer names
things (a setting as its form does); anything else is a bug, or a failure inside torch, and says
so, with its traceback kept in a file (:mod:`layerscope.app.error_reports`), as the command line
does.

The guard: handlers meet whatever the cache holds (NaNs, a run deleted meanwhile, a file from
another version). A bug there must become a notification and a log line, not a traceback that
ends the session of a user who has been computing for an hour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from layerscope.analysis.base.errors import LayerscopeError, is_internal, one_line
from layerscope.app.error_reports import internal_error, traceback_note
from layerscope.app.settings_presentation import form_name
from layerscope.app.tui.messages import ProblemReported

Handler = TypeVar("Handler", bound=Callable[..., Any])

CONTEXT = "in the explorer"  # heads a traceback file


def problem_line(error: BaseException) -> str:
    """One line for the user: a layerscope error with its settings named as the form names
    them; an unexpected one with its type and where its traceback was written."""
    if is_internal(error):
        return internal_error(error, CONTEXT)
    if isinstance(error, LayerscopeError):
        return error.describe(form_name)
    return one_line(error)


def run_failure(error: BaseException) -> str:
    """Why a run failed, for the "Run failed" line: as :func:`problem_line`, except that an
    unexpected failure keeps its own words first ("CUDA out of memory. (internal error:
    RuntimeError, traceback written to FILE)")."""
    if not is_internal(error):
        return problem_line(error)
    kind = "" if isinstance(error, LayerscopeError) else f"{type(error).__name__}, "
    return f"{one_line(error)} (internal error: {kind}{traceback_note(error, CONTEXT)})"


def _typed_problem(error: BaseException) -> str:
    """A handler's or worker's error: its type and line, where its traceback was written when
    it is unexpected."""
    if is_internal(error):
        return internal_error(error, CONTEXT)
    return f"{type(error).__name__}: {error}"


def reported(handler: Handler) -> Handler:
    """Run the handler; an exception is posted as ProblemReported instead of raised."""

    @functools.wraps(handler)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handler(self, *args, **kwargs)
        except Exception as error:
            self.post_message(ProblemReported("Display error", _typed_problem(error)))
            return None

    return guarded  # type: ignore[return-value]


class ReportsWorkerErrors:
    """Mixin for widgets with thread workers: a worker that raised is reported, not lost.

    Worker state messages do not bubble, so each widget that starts workers turns an error
    into a ProblemReported (which does bubble, to the app's notification and log panel).
    """

    def on_worker_state_changed(self, event: Any) -> None:
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.post_message(  # type: ignore[attr-defined]
                ProblemReported("Internal error", _typed_problem(error))
            )
