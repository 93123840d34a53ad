"""The computation: per-sample gradient statistics for every target matrix, batch by batch.

The fast method never forms a weight gradient through autograd. One forward and one backward
of a right-padded batch (the batch loss is the sum of the per-sample mean losses, so each
sample's output gradients are exactly its own; see ``passes``) give, per target module, the
inputs ``X`` and the output gradients ``D`` of every sample, captured by hooks (``capture``).
With all weights frozen the backward pass computes activation gradients only. A sample's weight
gradient is ``D^T X``, and everything reported about it comes from those factors (see
``spectral``): a T-by-T SVD instead of a full one, Gram-free and exact, measured inside the
backward as each module's gradient arrives (``streaming``).

The reference method is the paper's procedure and the tests' oracle: one sample at a time, the
full weight gradient from ``loss.backward()``, ``torch.linalg.svd`` (``reference``, with the
batch-end path the streaming one is tested against).

This module is the batch loop and what steers it: the method, the passes a token budget
allows, the routes the cost model plans for each pass, the weights frozen or not for the run
(``model_state``), and a pass that runs out of memory split in halves and retried.
``compute_statistics`` is a plain generator: it yields a ``BatchResult`` per batch, checks a
``threading.Event`` between batches, and knows nothing of threads, caches or UIs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from layerscope.analysis.base.records import (
    BatchResult,
    ComputeSettings,
    Sample,
    SampleResult,
    SkippedSample,
)
from layerscope.analysis.compute.batching import (
    default_tokens_per_batch,
    formed_gradients_budget,
    plan_batches,
)
from layerscope.analysis.compute.capture import StreamingCapture
from layerscope.analysis.compute.model_state import (
    check_checkpointing,
    checkpointing,
    frozen_weights,
)
from layerscope.analysis.compute.numerics import (
    PhaseTimer,
    denormals_flushed,
)
from layerscope.analysis.compute.numerics import (
    flush_subnormals_for_this_process as flush_subnormals_for_this_process,
)
from layerscope.analysis.compute.passes import forward_backward, padded_batch
from layerscope.analysis.compute.reference import fast_batch_at_end, reference_sample
from layerscope.analysis.compute.routes import SamplePlan, plan_batch, shapes_of, weights_for
from layerscope.analysis.compute.streaming import StreamingStatistics
from layerscope.analysis.compute.text import EncodedSample, SampleSkipped, encode_sample

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel
    from layerscope.analysis.models.targets import Target


def compute_statistics(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    settings: ComputeSettings,
    cancel: threading.Event | None = None,
) -> Iterator[BatchResult]:
    """Yield the statistics of ``samples`` batch by batch; stops early when ``cancel`` is set.

    The fast method groups samples of similar length into passes of at most
    ``settings.tokens_per_batch`` padded tokens (default: from the device's free memory, see
    :mod:`~layerscope.analysis.compute.batching`) and ``settings.batch_size`` rows; the reference method
    takes one sample at a time. One BatchResult per pass, each sample in exactly one, results
    in index order within a batch; samples that cannot be encoded come with the first.
    """
    targets = loaded.target_modules(settings.modules)
    if settings.checkpointing:
        check_checkpointing(loaded.model)
    total = len(samples)
    done = 0
    encoded: list[EncodedSample] = []
    skipped: list[SkippedSample] = []
    for sample in samples:
        try:
            encoded.append(encode_sample(sample, loaded.tokenizer, settings))
        except SampleSkipped as reason:
            skipped.append(SkippedSample(sample.index, str(reason)))
    batches = _plan(loaded, encoded, settings)
    if not batches and skipped:
        batches = [[]]
    with frozen_weights(loaded.model, frozen=settings.method == "fast"):
        for positions in batches:
            if cancel is not None and cancel.is_set():
                return
            began = time.perf_counter()
            batch = [encoded[i] for i in positions]
            done += len(batch) + len(skipped)
            results: list[SampleResult] = []
            timer = PhaseTimer(cuda=loaded.device.type == "cuda")
            if batch:
                if settings.method == "reference":
                    for one in batch:
                        results.append(reference_sample(loaded, targets, one, settings, timer))
                else:
                    batch_results, oom = _fast_batch_splitting(
                        loaded, targets, batch, settings, timer
                    )
                    results.extend(sorted(batch_results, key=lambda r: r.index))
                    skipped.extend(oom)
            yield BatchResult(
                results,
                skipped,
                done,
                total,
                time.perf_counter() - began,
                timer.seconds["forward_backward"],
                timer.seconds["statistics"],
            )
            skipped = []


def _plan(
    loaded: LoadedModel, encoded: Sequence[EncodedSample], settings: ComputeSettings
) -> list[list[int]]:
    """Positions into ``encoded`` per pass (see ``compute_statistics``)."""
    if settings.method == "reference":
        return [[i] for i in range(len(encoded))]
    budget = settings.tokens_per_batch
    if budget is None:
        budget = default_tokens_per_batch(
            loaded.device, getattr(loaded.model, "config", None), _element_bytes(loaded)
        )
    lengths = [e.length for e in encoded]
    return plan_batches(lengths, budget, max(1, settings.batch_size))


def _element_bytes(loaded: LoadedModel) -> int:
    itemsize = getattr(loaded.dtype, "itemsize", None)
    return itemsize if isinstance(itemsize, int) and itemsize > 0 else 4


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return type(error).__name__ == "OutOfMemoryError" or (
        "out of memory" in text or "can't allocate memory" in text
    )


def _fast_batch_splitting(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> tuple[list[SampleResult], list[SkippedSample]]:
    """Run a batch; on out-of-memory split it in halves and retry, down to single samples."""
    try:
        return _fast_batch(loaded, targets, encoded, settings, timer), []
    except (RuntimeError, MemoryError) as error:
        if not _is_out_of_memory(error):
            raise
    _release_memory(loaded)
    if len(encoded) == 1:
        sample = encoded[0]
        reason = f"out of memory on {loaded.device} at {sample.length} tokens"
        return [], [SkippedSample(sample.index, reason, retryable=True)]
    half = len(encoded) // 2
    first, first_skipped = _fast_batch_splitting(loaded, targets, encoded[:half], settings, timer)
    second, second_skipped = _fast_batch_splitting(loaded, targets, encoded[half:], settings, timer)
    return first + second, first_skipped + second_skipped


def _release_memory(loaded: LoadedModel) -> None:
    import gc

    import torch

    gc.collect()
    if loaded.device.type == "cuda":
        torch.cuda.empty_cache()


def _fast_batch(
    loaded: LoadedModel,
    targets: Sequence[Target],
    encoded: list[EncodedSample],
    settings: ComputeSettings,
    timer: PhaseTimer,
) -> list[SampleResult]:
    """One forward and backward of a batch; statistics as the backward reaches each module."""
    if not settings.streaming:
        return fast_batch_at_end(loaded, targets, encoded, settings, timer)

    input_ids, mask = padded_batch(loaded, encoded)
    plans = plan_routes(loaded, targets, [e.length - 1 for e in encoded], settings)
    statistics = StreamingStatistics(targets, encoded, settings, plans)
    with checkpointing(loaded.model, settings.checkpointing):
        capture = StreamingCapture(loaded.model, targets, statistics)
        try:
            with timer.phase("forward_backward"):
                losses = forward_backward(loaded, encoded, input_ids, mask)
            capture.check_complete()
            with timer.phase("statistics"), denormals_flushed():
                results = statistics.results([loss.item() for loss in losses])
            # The work done inside the backward's hooks is statistics, not forward+backward.
            timer.seconds["forward_backward"] -= statistics.hook_seconds
            timer.seconds["statistics"] += statistics.hook_seconds
            return results
        finally:
            capture.close()
            statistics.close()


def plan_routes(
    loaded: LoadedModel,
    targets: Sequence[Target],
    positions: Sequence[int],
    settings: ComputeSettings,
) -> list[SamplePlan]:
    """The cost model's routes for a batch of samples with these measured positions."""
    shapes = shapes_of(
        ((t.info.projection, t.info.rows, t.info.cols) for t in targets), working_bytes_of(loaded)
    )
    budget = formed_gradients_budget(loaded.device) if settings.routes == "auto" else None
    return plan_batch(
        shapes,
        positions,
        cosines=settings.cosines,
        entry_statistics=settings.entry_statistics,
        forced=settings.routes,
        budget_bytes=budget,
        weights=weights_for(loaded.device.type),
    )


def working_bytes_of(loaded: LoadedModel) -> int:
    """Bytes per element of the statistics' working dtype (float64 models: 8, else 4)."""
    return 8 if _element_bytes(loaded) == 8 else 4
