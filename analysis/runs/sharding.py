"""Shards of a request: the I-th of N balanced parts of each run's samples, for array jobs.

Why: a SLURM array job runs the same ``layerscope compute ... --shard $SLURM_ARRAY_TASK_ID/N``
in N tasks, each writing to its own node-local cache, with no launcher or shared file to hand
out work. Every task must therefore derive the same partition on its own, so the partition is
a pure function of the request's selected samples (the same data file, ``--limit`` and
``--sample-seed`` in every task), never of what a task's cache holds: tasks that share a cache
still split exactly. Within a task only the shard's samples that its cache lacks are computed,
so the union of the shards' missing samples is the request's missing set, each sample in one
shard only. ``layerscope merge`` then joins the N caches.

Balanced by cost: a sample's cost is estimated by its characters (instruction, input and
response), which track its tokens and so its forward/backward time, without a tokenizer.
Samples are dealt longest first to the shard with the least estimated work so far (ties: the
lower shard number, then the lower sample index), which keeps the N tasks' times close.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from layerscope.analysis.base.errors import LayerscopeError, mention
from layerscope.analysis.base.records import Sample

__all__ = ["ShardError", "parse_shard", "sample_cost", "shard_of"]


class ShardError(LayerscopeError, ValueError):
    """A shard (``I/N``) that cannot be used; the message is one line naming the option."""


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (0-based I, 0 <= I < N) as ``(I, N)``."""
    index_text, slash, count_text = text.strip().partition("/")
    try:
        if not slash:
            raise ValueError
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ShardError(
            f"{mention('shard')}: expected I/N (0-based shard I of N, e.g. 0/8), got {text!r}"
        ) from None
    if count < 1:
        raise ShardError(f"{mention('shard')} {text}: N must be at least 1")
    if not 0 <= index < count:
        raise ShardError(
            f"{mention('shard')} {text}: I must be 0 to {count - 1} (shards are 0-based)"
        )
    return index, count


def sample_cost(sample: Sample) -> int:
    """The estimated work of a sample: its characters (at least 1)."""
    return max(1, len(sample.instruction) + len(sample.input) + len(sample.output))


def shard_of(samples: Sequence[Sample], index: int, count: int) -> list[Sample]:
    """The samples of shard ``index`` of ``count``, in index order (see module docs)."""
    if count == 1:
        return sorted(samples, key=lambda s: s.index)
    order = sorted(samples, key=lambda s: (-sample_cost(s), s.index))
    loads = [(0, shard) for shard in range(count)]  # (estimated work, shard): a min-heap
    mine: list[Sample] = []
    for sample in order:
        load, shard = heapq.heappop(loads)
        if shard == index:
            mine.append(sample)
        heapq.heappush(loads, (load + sample_cost(sample), shard))
    return sorted(mine, key=lambda s: s.index)
