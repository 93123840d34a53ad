"""Reading the results cache off the UI thread: the one scaffold every view's reads go through.

Owns what each read needs besides its query: the db path (so no widget asks the App for it), a
request token per reader channel (a result that arrives after a newer request is dropped), the
loading state and, for coalescing channels, the stale mark (while one read is in flight, further
requests only mark the view stale; it reads once more when the read ends, with the choices of
that moment), opening `ResultsCache`, turning an error into one line, and posting the typed
result message to the widget that asked.

Why one service: the scaffold used to be written five times (the App's scan, the chart, the
cosines, the samples and the sample detail), and the copies had begun to differ (one kept a
failed read's "loading" flag forever, one reported errors with `str`, one with the type). An
unexpected exception in a query (a bug, a strange file) is reported as "Internal error" and
still ends the read with an error result, so no view waits for a result that never comes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from layerscope.analysis.base.errors import is_internal
from layerscope.app.tui.errors import problem_line
from layerscope.app.tui.messages import CacheRead, ProblemReported

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from layerscope.analysis.cache import ResultsCache

Result = TypeVar("Result", bound=CacheRead)


class CacheReader:
    """Knows the cache file; hands out one `ReadChannel` per view that reads."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def channel(
        self, node: DOMNode, group: str, *, coalesce: bool = False, exclusive: bool = False
    ) -> ReadChannel:
        """A stream of reads whose workers run on `node` and whose results are posted to it."""
        return ReadChannel(self, node, group, coalesce=coalesce, exclusive=exclusive)


class ReadChannel:
    """One view's reads: the newest request wins; `accept()` says whether a result is current.

    `coalesce`: at most one read in flight; requests meanwhile make it read once more after
    (`on_stale` is called to do so). `exclusive`: a new read cancels the worker of the previous
    one (its result, if it still arrives, is dropped by the token anyway).
    """

    def __init__(
        self,
        reader: CacheReader,
        node: DOMNode,
        group: str,
        *,
        coalesce: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.reader = reader
        self.node = node
        self.group = group
        self.coalesce = coalesce
        self.exclusive = exclusive
        self.token = 0
        self.on_stale: Callable[[], None] | None = None
        self._in_flight: int | None = None
        self._stale = False

    @property
    def loading(self) -> bool:
        """Whether the newest read started has not delivered its result yet."""
        return self._in_flight is not None

    def request(
        self, query: Callable[[ResultsCache], Result], failed: Callable[[], Result]
    ) -> bool:
        """Read `query(cache)` in a thread worker; `failed()` builds the result of an error.

        Returns False when the request was only marked stale (coalescing, a read in flight).
        """
        db_path = self.reader.db_path

        def read() -> Result:
            from layerscope.analysis.cache import ResultsCache

            with ResultsCache(db_path) as cache:
                return query(cache)

        return self.submit(read, failed)

    def submit(self, job: Callable[[], Result], failed: Callable[[], Result]) -> bool:
        """As `request`, for a job that opens no cache here: it reads through something else
        (the tests of significance, computed in another process, which opens the file itself).
        """
        if self.coalesce and self._in_flight is not None:
            self._stale = True
            return False
        self.token += 1
        self._stale = False
        self._in_flight = token = self.token
        node = self.node

        def run() -> None:
            try:
                message = job()
            except Exception as error:  # a bug or a strange file too: reported, never fatal
                message = failed()
                message.error = problem_line(error)
                if is_internal(error):
                    node.post_message(ProblemReported("Internal error", message.error))
            message.token = token
            node.post_message(message)

        node.run_worker(
            run, thread=True, group=self.group, exclusive=self.exclusive, exit_on_error=False
        )
        return True

    def invalidate(self) -> None:
        """Results of the reads in flight are no longer wanted (the view shows nothing now)."""
        self.token += 1
        self._stale = False

    def accept(self, message: CacheRead) -> bool:
        """On the UI thread, as a result arrives: whether the view should show it.

        The result of the read in flight ends the loading state; if requests came meanwhile,
        it is not shown and `on_stale` reads again instead.
        """
        if message.token == self._in_flight:
            self._in_flight = None
            if self._stale:
                self._stale = False
                if self.on_stale is not None:
                    self.on_stale()
                return False
        return message.token == self.token
