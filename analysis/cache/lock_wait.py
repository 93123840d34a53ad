"""How long an open waits for a cache file another process holds: its lock timeout, and longer
while that process works.

Why: DuckDB lets one process write a file at a time, and an import of a million lines is one
transaction (all of it or nothing). A compute that gave up on it after the lock timeout (reading
its plan, or storing a batch) lost its run, while a process that holds the file and does nothing
(an interactive shell left open on it) should be named after the timeout, not waited for
forever. So the wait has a deadline, and when it passes while the holder (a process of this
host, by the PID DuckDB names) has used CPU time since it was last looked at, the deadline moves
one timeout on. Where the CPU time cannot be read (not Linux, or a holder on another host), the
timeout is the whole wait, as before.
"""

from __future__ import annotations

import os
import time

__all__ = ["LockWait"]


class LockWait:
    """The wait of one open: ``holder`` at each refusal, then ``over`` says whether to stop."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._holder: tuple[int, float] | None = None  # (PID, its CPU time when last looked at)

    def holder(self, pid: int | None) -> None:
        """The process DuckDB named as holding the file (None: not named)."""
        if pid is not None and (self._holder is None or self._holder[0] != pid):
            seen = cpu_seconds(pid)
            self._holder = (pid, seen) if seen is not None else None

    def over(self) -> bool:
        """Whether to stop waiting: the deadline passed and the holder did no work since it was
        last looked at (when it did, the deadline moves one timeout on)."""
        if time.monotonic() < self.deadline:
            return False
        if self._holder is not None:
            pid, before = self._holder
            now = cpu_seconds(pid)
            if now is not None and now > before:
                self._holder = (pid, now)
                self.deadline = time.monotonic() + self.timeout
                return False
        return True

    def left(self) -> float:
        """Seconds to the deadline (0 once it passed)."""
        return max(0.0, self.deadline - time.monotonic())


def cpu_seconds(pid: int) -> float | None:
    """The CPU time a process of this host has used so far (None where it cannot be read:
    not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:  # utime and stime, the 14th and 15th fields (11th and 12th after the name)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError, OSError):
        return None
