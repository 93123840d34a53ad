"""Counting one run's computation in this call, and the progress record every front end shows.

Why apart from the execution core: the in-process runner, torchrun's coordinator, the CLI's bars
and JSON lines and the explorer's progress rows all read the same :class:`RunProgress`, and only
:class:`Tally` makes one (from the batches handled, the time since the run's start in this call
and the device's memory); the core only feeds it batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from layerscope.analysis.base.records import SampleResult
from layerscope.analysis.compute.batching import memory_in_use
from layerscope.analysis.runs.planning import Job

__all__ = ["RunProgress", "Tally"]


@dataclass
class RunProgress:
    """Where one run stands after a batch (or at its start and end).

    ``status``: running, complete, cancelled, failed, or cached (nothing was missing).
    ``done``/``total`` count this request's samples of the run (``--limit`` applies), cached
    ones included. ``tokens_per_second``: prompt and response tokens of the samples computed
    in this call per second of computing. ``memory_bytes``/``memory_peak_bytes``: what the
    device holds now and at most (torch's allocated memory on CUDA, the process's resident
    memory on a CPU: ``memory_kind`` "cuda" or "rss"); None before the model is loaded or where
    the device cannot tell.
    """

    run_id: str
    dataset: str
    response_type: str
    done: int
    total: int
    samples_per_second: float
    eta_seconds: float | None
    mean_loss: float | None
    status: str
    message: str = ""
    skipped: int = 0
    failed: int = 0
    tokens_per_second: float = 0.0
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    memory_kind: str = ""


# ---- planning and keying ----------------------------------------------------------------------


class Tally:
    """Counts and rates of one run's computation in this call."""

    def __init__(self, job: Job, device: Any = None) -> None:
        self.job = job
        self.device = device  # the model's input device, once loaded: whose memory to report
        self.tokens = 0
        self.started = time.perf_counter()
        self.handled = 0
        self.skipped = 0
        self.failed = 0
        self.loss_sum = 0.0
        self.loss_count = 0

    def add(self, results: Sequence[SampleResult], skipped: int, failed: int) -> None:
        self.handled += len(results) + skipped + failed
        self.skipped += skipped
        self.failed += failed
        for result in results:
            self.tokens += result.prompt_tokens + result.response_tokens
            self.loss_sum += result.loss
            self.loss_count += 1

    def progress(self, status: str, message: str = "") -> RunProgress:
        job = self.job
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.handled / elapsed if self.handled else 0.0
        remaining = len(job.missing) - self.handled
        memory = memory_in_use(self.device) if self.device is not None else None
        return RunProgress(
            run_id=job.run_id,
            dataset=job.source.dataset,
            response_type=job.source.response_type,
            done=len(job.selected) - len(job.missing) + self.handled,
            total=len(job.selected),
            samples_per_second=rate,
            eta_seconds=remaining / rate if rate > 0 else None,
            mean_loss=self.loss_sum / self.loss_count if self.loss_count else None,
            status=status,
            message=message,
            skipped=self.skipped,
            failed=self.failed,
            tokens_per_second=self.tokens / elapsed if self.tokens else 0.0,
            memory_bytes=memory.current if memory else None,
            memory_peak_bytes=memory.peak if memory else None,
            memory_kind=memory.kind if memory else "",
        )
