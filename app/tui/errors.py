"""A guard for message handlers that turn cached data into widgets.

Such handlers meet whatever the cache holds (NaNs, a run deleted meanwhile, a file from another
version). A bug there must become a notification and a log line, not a traceback that ends the
session of a user who has been computing for an hour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from layerscope.app.tui.messages import ProblemReported

Handler = TypeVar("Handler", bound=Callable[..., Any])


def reported(handler: Handler) -> Handler:
    """Run the handler; an exception is posted as ProblemReported instead of raised."""

    @functools.wraps(handler)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handler(self, *args, **kwargs)
        except Exception as error:
            self.post_message(ProblemReported("Display error", f"{type(error).__name__}: {error}"))
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
                ProblemReported("Internal error", f"{type(error).__name__}: {error}")
            )
