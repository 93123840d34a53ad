"""Stopping a computation from the shell: the first Ctrl-C or SIGTERM once the batch in flight
is computed and stored, a second Ctrl-C at once (dropping that batch). Before the first batch
(planning, imports, loading the model: minutes on a large checkpoint) no batch is in flight
and nothing would be lost, so the first signal stops at once there.

Why its own module: every way the command line runs a computation stops the same way (with
bars, with JSON lines, on a rank that only serves rank 0), and the stored batches stay either
way so that the same command resumes; one class keeps the signals' handling and the exit status
they ask for in one place.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from layerscope.app.cli.arguments import PROG

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LoadStage


class StoppedWhileLoading(KeyboardInterrupt):
    """A signal came before the first batch: the command stops at once, with ``exit_status``
    (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, exit_status: int) -> None:
        super().__init__(exit_status)
        self.exit_status = exit_status


class Cancellation:
    """First Ctrl-C (or SIGTERM) asks the runner to stop: the batch in flight is finished and
    stored, no other is started. A second Ctrl-C interrupts at once, dropping the batch in
    flight. Either way the stored batches stay and a rerun resumes."""

    def __init__(self, announce: bool = True, at_once_while_loading: bool = True) -> None:
        self.announce = announce  # a worker rank stays silent: rank 0 speaks for the job
        self.event = threading.Event()
        self.signal: int | None = None  # the first signal that asked to stop
        # no batch in flight yet: a signal stops at once (see `stage`); a torchrun worker rank
        # hears no stages and stops when rank 0 says so
        self.loading = at_once_while_loading
        self._previous: dict[int, Any] = {}

    def stage(self, stage: LoadStage) -> None:
        """Hear the runner's loading steps: while a model loads no batch is in flight (a
        signal stops at once); from its first batch on, batches are (the first signal lets
        the batch in flight be stored)."""
        self.loading = stage.step != "first batch"

    @property
    def exit_status(self) -> int:
        """128 + the signal that stopped the run (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signal if self.signal is not None else signal.SIGINT)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signum
        self.event.set()
        if self.loading:
            raise StoppedWhileLoading(128 + signum)
        if self.announce:
            print(
                f"{PROG}: stopping once the batch in flight is stored "
                "(Ctrl-C again to stop now and drop it)",
                file=sys.stderr,
            )

    def __enter__(self) -> Cancellation:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
