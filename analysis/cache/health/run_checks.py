"""The checks of a cache's runs: their stored counts against what their sessions recorded, and
runs left running by a process that is gone.

Why a module of its own: the runs' records (:class:`ExaminedRun`, each with its stored, skipped
and failed counts, counted in SQL) are read once and are what every later check names its
findings by; the checks of sums and rows take them from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from layerscope.analysis.cache import liveness
from layerscope.analysis.cache.health.report import HealthReport, plural

__all__ = ["ExaminedRun", "check_counts", "check_interrupted", "examined_runs"]


@dataclass
class ExaminedRun:
    """A run as the checks see it: its record, and how many of its samples are stored, skipped
    and failed."""

    number: int
    id: str
    label: str
    status: str
    samples_total: int
    owner_pid: int | None
    owner_host: str | None
    provenance: dict[str, Any]
    stored: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return f"run {self.short_id} ({self.label})"


def examined_runs(con: duckdb.DuckDBPyConnection, tables: set[str]) -> dict[int, ExaminedRun]:
    """Every run of the file, by run number, with its samples counted in SQL."""
    rows = con.execute(
        "SELECT run_no, id, model, dataset, response_type, status, samples_total, owner_pid, "
        "owner_host, provenance FROM runs ORDER BY run_no"
    ).fetchall()
    found: dict[int, ExaminedRun] = {}
    for number, run_id, model, dataset, response_type, status, total, pid, host, prov in rows:
        try:
            provenance = json.loads(prov) if prov else {}
        except ValueError:
            provenance = {}
        found[int(number)] = ExaminedRun(
            int(number),
            run_id,
            f"{model} / {dataset}/{response_type}",
            status,
            int(total),
            None if pid is None else int(pid),
            host,
            provenance if isinstance(provenance, dict) else {},
        )
    if "samples" in tables:
        for number, count in con.execute(
            "SELECT run_no, count(*) FROM samples GROUP BY ALL"
        ).fetchall():
            if int(number) in found:
                found[int(number)].stored = int(count)
    if "skipped" in tables:
        for number, kind, count in con.execute(
            "SELECT run_no, kind, count(*) FROM skipped GROUP BY ALL"
        ).fetchall():
            if int(number) in found and kind in ("skipped", "failed"):
                setattr(found[int(number)], kind, int(count))
    return found


def check_counts(report: HealthReport, runs: dict[int, ExaminedRun]) -> None:
    """Compare each finished run's stored samples with what its last session recorded."""
    stored = sum(r.stored for r in runs.values())
    problems = 0
    for run in runs.values():
        recorded = run.provenance.get("samples_done")
        if run.status == "running" or not isinstance(recorded, int) or recorded == run.stored:
            continue
        if run.stored < recorded:
            problems += 1
            report.add(
                "runs",
                "problem",
                f"{run.name}: its last session recorded {recorded} samples but "
                f"{run.stored} are stored: the same command recomputes the missing ones",
                run.id,
            )
        else:
            report.add(
                "runs",
                "note",
                f"{run.name}: {run.stored} samples stored, {recorded} when its last session "
                "ended (another process added the rest)",
                run.id,
            )
    if not problems:
        report.add(
            "runs",
            "ok",
            f"{plural(len(runs), 'run')}, {plural(stored, 'sample')} stored"
            + (": counts agree with what their sessions recorded" if runs else ""),
        )


def check_interrupted(report: HealthReport, path: Path, runs: dict[int, ExaminedRun]) -> None:
    """Tell runs still being computed from runs whose process is gone (those resume): by the
    locks a live compute holds (cache/liveness.py), else by the stored PID."""
    found = False
    for run in runs.values():
        if run.status != "running":
            continue
        found = True
        progress = f"{run.stored} of {run.samples_total} samples stored"
        live = liveness.computing(path, run.id, run.status, run.owner_pid, run.owner_host)
        if live is None:
            report.add(
                "interrupted",
                "note",
                f"{run.name}: running on host {run.owner_host} (PID {run.owner_pid}) or "
                f"interrupted there ({progress}); this host cannot tell",
                run.id,
            )
        elif live:
            report.add(
                "interrupted",
                "note",
                f"{run.name}: being computed by PID {run.owner_pid} right now ({progress})",
                run.id,
            )
        else:
            report.add(
                "interrupted",
                "problem",
                f"{run.name}: interrupted: {progress}; the same command resumes",
                run.id,
            )
    if not found:
        report.add("interrupted", "ok", "no interrupted runs")
