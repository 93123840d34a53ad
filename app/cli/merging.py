"""``merge``: join the caches of array-job tasks (or of several machines) into one.

Why a command of its own: ``compute --shard I/N`` leaves N node-local caches, each with part
of the same runs; the user copies them back and merges them, and must learn of any sample two
caches hold with different values instead of getting one of them silently. The rules (match by
run key and sample index, compare every stored number, one transaction per run) are
:mod:`layerscope.analysis.cache.merging`'s; this module prints its per-run summary (stdout) and the
conflicts (stderr, one line each), the runs left out because a process computes them into
the destination right now, and sets the exit status.
"""

from __future__ import annotations

import argparse
import sys

from layerscope.app.cli.arguments import PROG

EXIT_CONFLICTS = 1


def cmd_merge(args: argparse.Namespace) -> int:
    from layerscope.analysis.cache.merging import RunMerge, merge_caches

    def told(merge: RunMerge) -> None:
        print(merge.line(), flush=True)
        for conflict in merge.conflicts:
            print(f"{PROG}: {conflict.line()}", file=sys.stderr, flush=True)

    merges = merge_caches(args.sources, args.into, rtol=args.rtol, on_run=told)
    conflicts = sum(len(m.conflicts) for m in merges)
    copied = sum(m.copied for m in merges)
    runs = len({m.run_id for m in merges})
    print(
        f"merged {len(args.sources)} cache(s) into {args.into}: {runs} run(s), "
        f"{copied} sample(s) copied, {conflicts} conflict(s)",
        file=sys.stderr,
    )
    left_out = [m for m in merges if m.left_out]
    if conflicts:
        print(
            f"{PROG}: error: {conflicts} sample(s) differ between the caches; the destination "
            "kept its values (see the conflict lines above)",
            file=sys.stderr,
        )
    if left_out:
        print(
            f"{PROG}: error: {len(left_out)} run(s) left out, being computed into the "
            f"destination right now ({', '.join(m.run_id[:12] for m in left_out)}); the others "
            "are merged: merge the same caches again once those runs end",
            file=sys.stderr,
        )
    return EXIT_CONFLICTS if conflicts or left_out else 0
