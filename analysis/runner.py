"""Running computations against the cache: compute what is missing, nothing twice.

Why a runner apart from the engine: the engine turns samples into statistics and knows nothing
of files, keys or resumption; the CLI and the TUI both need the same orchestration around it:
resolve the dataset into response-type sources, key each (model, data file, response type,
settings) run, skip what the cache already holds, load the model only when something is
missing, store each batch in one transaction, and leave every run marked complete, cancelled or
failed, whatever happens. Both call :func:`execute`, a plain generator that yields a
:class:`RunProgress` per stored batch and checks a ``threading.Event`` between batches.

Which runs a request touches, their keys and what is already cached is
:mod:`~layerscope.analysis.planning`'s (re-exported here: callers import the runner alone).

Failures: a sample the engine skips (no response token left after truncation, ...) is recorded
as skipped with its reason and never retried. When computing a chunk raises, its samples are
retried one at a time, so one bad sample cannot sink a run; a sample that fails alone (or runs
out of memory even alone) is recorded as failed and retried on the next call. A chunk in which
no sample succeeds stops the run as failed with the error.
"""

from __future__ import annotations

import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.batching import memory_in_use
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import DatasetError
from layerscope.analysis.errors import is_internal, mention, one_line, quoted
from layerscope.analysis.lifecycle import StoredRun, package_version
from layerscope.analysis.planning import (
    Job,
    PlannedRun,
    RunnerError,
    RunRequest,
    check_device,
    ensure_model,
    model_identity,
    plan,
    plan_jobs,
    planned_runs,
    resolve_dtype,
    resolve_sources,
    run_key,
    select_samples,
)
from layerscope.analysis.records import (
    BatchResult,
    LoadStage,
    RunHeader,
    Sample,
    SampleResult,
    SkippedSample,
    TargetInfo,
)

if TYPE_CHECKING:
    from layerscope.analysis.models import LoadedModel

__all__ = [
    "PlannedRun",
    "RunProgress",
    "RunRequest",
    "RunnerError",
    "execute",
    "plan",
    "resolve_dtype",
    "resolve_sources",
    "run_key",
    "select_samples",
]

# Batches per engine call: a chunk that raises is retried sample by sample.
CHUNK_BATCHES = 8


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


def _settings_record(
    request: RunRequest, job: Job, identity: dict[str, Any], dtype: str
) -> dict[str, Any]:
    settings = request.settings
    return {
        **settings.key_fields(),
        "system_prompt": settings.system_prompt,
        "dtype": dtype,
        "method": settings.method,
        "model_spec": request.model,
        "model_identity": identity,
        "data_file": str(job.source.path),
        "data_sha256": job.data_sha256,
        "relevance": job.source.relevance,
        "fields": asdict(job.source.fields),
    }


def prepare_cpu(request: RunRequest) -> int:
    """This process's CPU arithmetic for a computation, before its model is loaded: subnormals
    flushed and torch's threads set (``--cpu-threads``, auto: this process's share of the
    CPUs). Returns the threads in use. Both the runner and each torchrun rank call it."""
    from layerscope.analysis.numerics import flush_subnormals_for_this_process, use_cpu_threads

    flush_subnormals_for_this_process()
    return use_cpu_threads(request.cpu_threads)


def first_batch_description(loaded: LoadedModel) -> str:
    """The last loading stage's words; on a CPU with the threads it computes on."""
    if loaded.device.type != "cpu":
        return "computing the first batch"
    import torch

    threads = torch.get_num_threads()
    return f"computing the first batch on {threads} CPU thread{'s' * (threads != 1)}"


def _provenance(request: RunRequest, loaded: LoadedModel, dtype: str) -> dict[str, Any]:
    import torch

    device = str(loaded.device)
    record: dict[str, Any] = {
        "layerscope": package_version("layerscope"),
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device,
        "dtype": dtype,
        "batch_size": request.settings.batch_size,
        "tokens_per_batch": request.settings.tokens_per_batch,
        "cpu_threads": torch.get_num_threads(),  # in use (--cpu-threads, or auto)
        "method": request.settings.method,
        "limit": request.limit,
        "sample_seed": request.sample_seed,
    }
    placement = getattr(loaded.model, "hf_device_map", None)
    if request.device_map != "none" and placement:
        record["device_map"] = request.device_map
        record["placed_on"] = sorted({str(where) for where in placement.values()})
    if loaded.device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(loaded.device)
    return record


def _split_failures(batch: BatchResult) -> tuple[BatchResult, list[SkippedSample]]:
    """Out-of-memory skips are failures (retried later), not properties of the sample."""
    failed = [s for s in batch.skipped if s.retryable]
    if not failed:
        return batch, []
    kept = [s for s in batch.skipped if not s.retryable]
    return replace(batch, skipped=kept), failed


class _Tally:
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


def execute(
    request: RunRequest,
    db_path: Path | str | None = None,
    cancel: threading.Event | None = None,
    on_plan: Callable[[list[PlannedRun]], None] | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
) -> Iterator[RunProgress]:
    """Compute every missing sample of the request's runs, yielding progress per batch.

    ``on_plan`` receives the runs this call touches (as :func:`plan` would return them, from
    the same reading of the data and the cache) before anything is computed, so a caller that
    shows a plan does not plan twice. ``on_stage`` hears each step of loading the model (see
    :class:`~layerscope.analysis.records.LoadStage`), ending with "first batch".

    A request whose runs are all cached imports neither torch nor the model: ``auto`` dtype is
    first resolved from the device files, and only when something is missing does torch decide
    it (should the two differ, the request is planned again with torch's answer).

    Raises DatasetError, ModelLoadError (both ValueError), CacheError or RunnerError with a
    one-line message. Closing the generator (or KeyboardInterrupt) marks the current run
    cancelled; its stored batches stay and the next call resumes after them.
    """
    # before the cache is asked: an impossible request is refused
    check_device(request.device, request.device_map, request.max_memory)
    cache = ResultsCache(db_path)
    ensure_model(request, on_stage)  # a hub model not cached yet is downloaded (unless offline)
    identity = model_identity(request.model, request.revision, request.offline)
    dtype = resolve_dtype(request.dtype, request.device, allow_torch=False)
    jobs = plan_jobs(request, cache, identity, dtype)
    if not jobs:
        raise DatasetError(str(request.dataset), "no response types to compute")
    if any(job.missing for job in jobs):
        tell = on_stage or (lambda _stage: None)
        if "torch" not in sys.modules:
            tell(LoadStage("imports", "importing torch and transformers"))
        checked = resolve_dtype(request.dtype, request.device, allow_torch=True)
        if checked != dtype:  # torch knows better than the device files
            dtype = checked
            jobs = plan_jobs(request, cache, identity, dtype)
    if on_plan is not None:
        on_plan(planned_runs(jobs))
    loaded: LoadedModel | None = None
    targets: list[TargetInfo] = []
    for job in jobs:
        tally = _Tally(job)
        if not job.missing:
            yield tally.progress("cached")
            continue
        if cancel is not None and cancel.is_set():
            yield tally.progress("cancelled", "cancelled before it started")
            return
        if loaded is None:
            from layerscope.analysis.models import load_model
            from layerscope.analysis.settings import parse_max_memory

            prepare_cpu(request)  # before torch starts its worker threads
            loaded = load_model(
                request.model,
                dtype=dtype,
                device=request.device,
                trust_remote_code=request.trust_remote_code,
                on_stage=on_stage,
                init=request.settings.init,
                init_seed=request.settings.init_seed,
                device_map=None if request.device_map == "none" else request.device_map,
                max_memory=parse_max_memory(request.max_memory),
                revision=request.revision,
                offline=request.offline,
            )
            if request.settings.method == "reference" and loaded.offloaded_to_disk:
                raise RunnerError(
                    f"{mention('method')} reference needs every weight's gradient, and the "
                    f"device map offloaded layers to disk; give {mention('max_memory')} more "
                    f"room or use {mention('method')} fast"
                )
            targets = loaded.targets(request.settings.modules)
            if on_stage is not None:
                on_stage(LoadStage("first batch", first_batch_description(loaded)))
        header = RunHeader(
            job.run_id,
            model=loaded.name,
            dataset=job.source.dataset,
            response_type=job.source.response_type,
            mode=request.settings.mode,
            samples_total=len(job.samples),
            targets=targets,
            settings=_settings_record(request, job, identity, dtype),
            provenance={**_provenance(request, loaded, dtype), **job.shard_record},
        )
        stored_run = StoredRun(cache, header, cancel=cancel)
        with stored_run:
            tally = _Tally(job, loaded.device)  # rates from here: loading is not computing
            yield tally.progress("running")
            yield from _compute_job(request, stored_run, loaded, job, tally, cancel)
        yield tally.progress(stored_run.status, stored_run.message)
        if stored_run.status == "cancelled":
            return


def _compute_job(
    request: RunRequest,
    run: StoredRun,
    loaded: LoadedModel,
    job: Job,
    tally: _Tally,
    cancel: threading.Event | None,
) -> Iterator[RunProgress]:
    from layerscope.analysis.engine import compute_statistics

    settings = request.settings
    by_index = {s.index: s for s in job.missing}
    chunk_size = max(1, settings.batch_size) * CHUNK_BATCHES
    for start in range(0, len(job.missing), chunk_size):
        if cancel is not None and cancel.is_set():
            return
        chunk = job.missing[start : start + chunk_size]
        stored: set[int] = set()
        try:
            for batch in compute_statistics(loaded, chunk, settings, cancel):
                yield _store(run, tally, batch, by_index, stored)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as error:
            first_error = error
            remaining = [s for s in chunk if s.index not in stored]
            succeeded = 0
            one_at_a_time = replace(settings, batch_size=1)
            for sample in remaining:
                if cancel is not None and cancel.is_set():
                    return
                try:
                    for batch in compute_statistics(loaded, [sample], one_at_a_time, cancel):
                        yield _store(run, tally, batch, by_index, stored)
                        succeeded += len(batch.results) + len(batch.skipped)
                except (KeyboardInterrupt, GeneratorExit):
                    raise
                except Exception as sample_error:
                    failure = SkippedSample(sample.index, one_line(sample_error, with_type=True))
                    empty = BatchResult([], [], 0, 0)
                    run.write(empty, by_index, failed=[failure])
                    tally.add([], 0, 1)
                    yield tally.progress(
                        "running", f"sample {sample.index} failed: {failure.reason}"
                    )
            if remaining and succeeded == 0 and not stored:
                # A layerscope error is the request's (a setting the model refuses); anything
                # else is a bug or torch's failure, which the front ends show as internal.
                raise RunnerError(
                    f"{job.source.label}: computing failed for every sample of a chunk: "
                    f"{quoted(first_error)}",
                    internal=is_internal(first_error),
                ) from first_error


def _store(
    run: StoredRun,
    tally: _Tally,
    batch: BatchResult,
    by_index: dict[int, Sample],
    stored: set[int],
) -> RunProgress:
    kept, failed = _split_failures(batch)
    run.write(kept, by_index, failed=failed)
    stored.update(r.index for r in kept.results)
    stored.update(s.index for s in kept.skipped)
    stored.update(s.index for s in failed)
    tally.add(kept.results, len(kept.skipped), len(failed))
    return tally.progress("running")
