"""What a request would cost, before it is committed to: ``compute --dry-run``.

Why here and built on the runner's own steps: an estimate is only worth reading if it describes
the computation that would really run. So the request is planned by the execution core's
:func:`~layerscope.analysis.runs.execution.plan_execution` (the same keys, the same ``--limit``,
``--sample-seed`` and ``--shard`` selection, resumption from what the cache holds), the model is
loaded by :func:`~layerscope.analysis.runs.execution.load_model_for`, every sample to do is
encoded by the engine's :func:`~layerscope.analysis.compute.text.encode_sample` (the real
tokenizer, cut at ``--max-length``; a sample it refuses is counted as the runner would record
it, skipped with its reason), and the calibration is the engine's
:func:`~layerscope.analysis.compute.engine.compute_statistics` on the first samples the runner
would compute of each run (its first chunk), with nothing stored: no run is begun, and a cache
file that does not exist is not created (planning only reads it).

The estimate: seconds per token (prompt and response tokens, as the progress counts them)
measured on the calibration batches of each run, times the tokens that run has to do; a run the
time budget left uncalibrated takes the rate of all calibration batches together. One batch
runs first unmeasured, so that one-off costs (kernels compiled or loaded, memory first
allocated) are not spread over the whole request. The peak memory is what the progress shows
for a computation (:func:`~layerscope.analysis.compute.batching.memory_in_use`): on CUDA torch's
peak allocation, weights included; on a CPU the process's peak resident memory. It is measured
on the calibration's batches only, so a later pass of longer samples may need more.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.records import LoadStage, Sample
from layerscope.analysis.runs.execution import load_model_for, plan_execution
from layerscope.analysis.runs.planning import Job, RunRequest
from layerscope.analysis.runs.runner import CHUNK_BATCHES

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel

__all__ = ["CALIBRATION_SECONDS", "Calibration", "Estimate", "RunEstimate", "estimate"]

# Seconds of computing the calibration may take, shared equally by the runs with samples to do;
# each such run gets at least one batch while the budget lasts, and the first batch measured is
# always computed, so one slow batch may take longer.
CALIBRATION_SECONDS = 10.0


@dataclass(frozen=True)
class RunEstimate:
    """One run of the request: what it has to do and how long that should take."""

    run_id: str
    label: str  # dataset/response_type
    samples: int  # to compute now (measurable ones; cached and refused ones not counted)
    cached: int  # of the selected samples, already stored (or recorded as skipped)
    tokens: int  # prompt + response tokens of ``samples``, cut at max_length
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> samples the engine refuses
    seconds: float = 0.0  # estimated computing time (0 for nothing to do)
    calibration_samples: int = 0  # of this run's samples, computed to measure its rate


@dataclass(frozen=True)
class Calibration:
    """What was measured: ``samples`` samples of ``tokens`` tokens in ``seconds`` of
    computing (the unmeasured first batch not counted), the peak memory on ``device``."""

    device: str
    samples: int
    tokens: int
    seconds: float
    loading_seconds: float
    peak_bytes: int | None
    memory_kind: str | None  # "cuda" (torch's peak allocation) or "rss" (process, CPU)

    @property
    def seconds_per_token(self) -> float:
        return self.seconds / self.tokens if self.tokens else math.nan


@dataclass(frozen=True)
class Estimate:
    """The request's runs and the calibration they were estimated from (None when nothing
    is to be computed: no model was loaded)."""

    runs: list[RunEstimate]
    calibration: Calibration | None

    @property
    def samples(self) -> int:
        return sum(run.samples for run in self.runs)

    @property
    def tokens(self) -> int:
        return sum(run.tokens for run in self.runs)

    @property
    def seconds(self) -> float:
        return sum(run.seconds for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        """The estimate as plain JSON values (the CLI's ``--progress-format jsonl`` line)."""
        calibration = self.calibration
        return {
            "runs": [vars(run) | {"seconds": round(run.seconds, 3)} for run in self.runs],
            "samples": self.samples,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "calibration": None
            if calibration is None
            else {
                "device": calibration.device,
                "samples": calibration.samples,
                "tokens": calibration.tokens,
                "seconds": round(calibration.seconds, 3),
                "seconds_per_token": calibration.seconds_per_token,
                "loading_seconds": round(calibration.loading_seconds, 3),
                "peak_bytes": calibration.peak_bytes,
                "memory_kind": calibration.memory_kind,
            },
        }


def estimate(
    request: RunRequest,
    db_path: Path | str | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
    budget_seconds: float = CALIBRATION_SECONDS,
) -> Estimate:
    """Plan the request, count its samples and tokens, and time a few of its batches; nothing
    is stored. Raises what :func:`~layerscope.analysis.runs.runner.execute` raises before it
    computes (DatasetError, ModelLoadError, CacheError, RunnerError)."""
    planned = plan_execution(request, db_path, on_stage)
    if not planned.missing:
        return Estimate([_run(job, {}) for job in planned.jobs], None)
    began = time.perf_counter()
    loaded = load_model_for(request, planned.dtype, on_stage)
    loading = time.perf_counter() - began
    counted = [_count(job, loaded, request) for job in planned.jobs]
    if on_stage is not None:
        on_stage(LoadStage("calibration", f"calibrating: up to {budget_seconds:g} s of batches"))
    chunk = max(1, request.settings.batch_size) * CHUNK_BATCHES
    # The samples the runner would compute first of each run (those the engine can measure).
    firsts = [
        [s for s in job.missing[:chunk] if s.index in measurable]
        for job, (measurable, _, _) in zip(planned.jobs, counted, strict=True)
    ]
    _warm_up(loaded, request, next((first for first in firsts if first), []))
    rates: list[tuple[float, int, int]] = []  # (seconds, tokens, samples) per run
    spent = 0.0
    for position, first in enumerate(firsts):
        if not first or (spent >= budget_seconds and any(r[1] for r in rates)):
            rates.append((0.0, 0, 0))
            continue
        # An equal share of what is left for each run still to calibrate.
        share = (budget_seconds - spent) / sum(1 for later in firsts[position:] if later)
        measured = _measure(loaded, request, first, share)
        spent += measured[0]
        rates.append(measured)
    pooled = sum(r[0] for r in rates) / max(1, sum(r[1] for r in rates))
    runs = []
    for job, (_ok, tokens, skipped), (seconds, measured_tokens, samples) in zip(
        planned.jobs, counted, rates, strict=True
    ):
        rate = seconds / measured_tokens if measured_tokens else pooled
        runs.append(_run(job, skipped, tokens, rate * tokens, samples))
    memory = _memory(loaded)
    calibration = Calibration(
        str(loaded.device),
        sum(r[2] for r in rates),
        sum(r[1] for r in rates),
        sum(r[0] for r in rates),
        loading,
        memory[0] if memory else None,
        memory[1] if memory else None,
    )
    return Estimate(runs, calibration)


def _count(
    job: Job, loaded: LoadedModel, request: RunRequest
) -> tuple[dict[int, int], int, dict[str, int]]:
    """Each measurable missing sample's tokens by index, their total, and the refused ones
    counted by reason (as the engine would encode them)."""
    from layerscope.analysis.compute.text import SampleSkipped, encode_sample

    tokens: dict[int, int] = {}
    skipped: Counter[str] = Counter()
    for sample in job.missing:
        try:
            encoded = encode_sample(sample, loaded.tokenizer, request.settings)
        except SampleSkipped as reason:
            skipped[str(reason)] += 1
            continue
        tokens[sample.index] = encoded.prompt_tokens + encoded.response_tokens
    return tokens, sum(tokens.values()), dict(skipped)


def _run(
    job: Job,
    skipped: dict[str, int],
    tokens: int = 0,
    seconds: float = 0.0,
    calibration_samples: int = 0,
) -> RunEstimate:
    to_do = len(job.missing) - sum(skipped.values())
    return RunEstimate(
        job.run_id,
        job.source.label,
        to_do,
        len(job.selected) - len(job.missing),
        tokens,
        skipped,
        seconds,
        calibration_samples,
    )


def _warm_up(loaded: LoadedModel, request: RunRequest, samples: Sequence[Sample]) -> None:
    """One batch of the shortest sample, unmeasured (see the module's docs)."""
    from dataclasses import replace

    from layerscope.analysis.compute.engine import compute_statistics

    if not samples:
        return
    shortest = min(samples, key=lambda s: len(s.prompt) + len(s.output))
    one = replace(request.settings, batch_size=1)
    for _batch in compute_statistics(loaded, [shortest], one):
        pass


def _measure(
    loaded: LoadedModel, request: RunRequest, samples: Sequence[Sample], budget: float
) -> tuple[float, int, int]:
    """(seconds, tokens, samples) of the engine's batches over ``samples``, stopping after
    the batch that reaches ``budget`` seconds (at least one batch is computed)."""
    from layerscope.analysis.compute.engine import compute_statistics

    seconds, tokens, computed = 0.0, 0, 0
    enough = threading.Event()  # the engine's own stop between batches: it ends cleanly
    for batch in compute_statistics(loaded, list(samples), request.settings, enough):
        seconds += batch.seconds
        tokens += sum(r.prompt_tokens + r.response_tokens for r in batch.results)
        computed += len(batch.results)
        if seconds >= budget and tokens:
            enough.set()
    return seconds, tokens, computed


def _memory(loaded: LoadedModel) -> tuple[int, str] | None:
    from layerscope.analysis.compute.batching import memory_in_use

    memory = memory_in_use(loaded.device)
    return None if memory is None else (memory.peak, memory.kind)
