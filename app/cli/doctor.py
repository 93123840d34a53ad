"""``doctor``: what is wrong with a cache file, and what to do about it, from a shell.

Why a command of its own: when the cache refuses to open (a damaged write-ahead log, an
unreadable schema version) every other command can only say so in one line; this one looks at
everything (:mod:`layerscope.analysis.cache.health`) and prints one finding per line: the
severity (``ok``, ``note``, ``problem``), the check, and what it found and what to do. Exit
status 0 when nothing needs action, 1 otherwise, so scripts can run it before a long compute.
It changes nothing unless asked: ``--set-aside-wal`` moves a damaged log aside and ``--repair``
removes orphaned and duplicated rows and recomputes the curve sums, each after copying the file
beside itself. ``--json`` prints the report as one JSON object. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys

from layerscope.analysis.base.locations import default_db_path
from layerscope.analysis.cache import health

EXIT_NEEDS_ACTION = 1


def cmd_doctor(args: argparse.Namespace) -> int:
    path = default_db_path() if args.db is None else args.db
    if args.set_aside_wal:
        report = health.set_aside_wal(path)
    elif args.repair:
        report = health.repair(path)
    else:
        report = health.examine(path)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for action in report.actions:
            print(f"{'done':<8} {'':<12} {action}")
        for finding in report.findings:
            print(f"{finding.severity:<8} {finding.check:<12} {finding.message}")
        problems = sum(f.severity == "problem" for f in report.findings)
        summary = (
            f"{report.path}: healthy"
            if report.healthy
            else f"{report.path}: {problems} problem{'s' * (problems != 1)} to act on"
        )
        print(summary, file=sys.stderr)
    return 0 if report.healthy else EXIT_NEEDS_ACTION
