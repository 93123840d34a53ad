"""The records of a cache's health: one :class:`Finding` per line, and the report they make up.

Why a module of its own: every check adds its findings to a :class:`HealthReport`, each repair
adds what it did to one before it examines the result, and ``layerscope doctor`` prints them (or
their JSON); so the records belong to neither the checks nor the repairs, and both import them
from here. The wording of sizes and counts the checks share is here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SEVERITIES", "Finding", "HealthReport", "plural", "size_text"]

SEVERITIES = ("ok", "note", "problem")  # a problem needs action; a note is worth knowing


@dataclass(frozen=True)
class Finding:
    """One line of a health report: which check, how serious, and what it says to do."""

    check: str  # file, wal, schema, environment, runs, interrupted, sums, orphans, duplicates
    severity: str  # one of SEVERITIES
    message: str
    run_id: str | None = None  # the run it is about, when it is about one


@dataclass
class HealthReport:
    """Everything :func:`~.examining.examine` found, and what a repair did before it looked."""

    path: Path
    findings: list[Finding] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "problem" for f in self.findings)

    def add(self, check: str, severity: str, message: str, run_id: str | None = None) -> None:
        assert severity in SEVERITIES
        self.findings.append(Finding(check, severity, message, run_id))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "healthy": self.healthy,
            "actions": list(self.actions),
            "findings": [asdict(f) for f in self.findings],
        }


def size_text(count: float) -> str:
    """A size in bytes as a person reads it (``1.5 MiB``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def plural(count: int, word: str) -> str:
    """``count`` and ``word``, plural unless one."""
    return f"{count} {word}{'s' * (count != 1)}"
