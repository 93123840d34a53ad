"""The execution core: what every computation does, in one process or over torchrun's ranks.

Why one core: a run is what its key says it is, so wherever its samples are computed it must
be planned, keyed, loaded, counted and recorded the same way. The in-process runner
(:mod:`~layerscope.analysis.runs.runner`) and the torchrun coordinator and workers
(:mod:`~layerscope.analysis.runs.distributed`) differ only in who computes which samples and when a
batch reaches the cache; everything else is here, once:

* :func:`plan_execution`: the device checked (with its device map and ``--max-memory``), a hub
  model fetched when it is not cached, its identity read at ``--revision``, the dtype resolved,
  and every run keyed against the cache (:mod:`~layerscope.analysis.runs.planning` says how);
* :func:`load_model_for`: the model loaded as the plan keyed it (same revision, dtype, device
  map), after this process's CPU arithmetic is set (:func:`prepare_cpu`);
* :func:`run_header`: what a run is begun with, its settings record and this session's
  provenance; the caller holds the run open as a :class:`~layerscope.analysis.runs.lifecycle.StoredRun`;
* :func:`compute_with_retries`: the engine's batches, a failing batch retried sample by sample
  (a disk that refuses a write is not retried: it stops the run);
* :func:`store`: each batch in its own transaction, counted by a
  :class:`~layerscope.analysis.runs.tally.Tally` into the
  :class:`~layerscope.analysis.runs.tally.RunProgress` every front end shows.
"""

from __future__ import annotations

import platform
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import mention, one_line
from layerscope.analysis.base.records import (
    BatchResult,
    ComputeSettings,
    LoadStage,
    RunHeader,
    Sample,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.cache import ResultsCache, storage_errno
from layerscope.analysis.datasets import DatasetError
from layerscope.analysis.runs.lifecycle import (
    MARKED_COMPLETE,
    StoredRun,
    complete_if_stored,
    package_version,
)
from layerscope.analysis.runs.planning import (
    Job,
    PlannedRun,
    RunnerError,
    RunRequest,
    check_device,
    ensure_model,
    plan_jobs,
    planned_runs,
    request_identity,
    resolve_dtype,
)
from layerscope.analysis.runs.tally import RunProgress, Tally

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel

__all__ = [
    "ChunkFailed",
    "ExecutionPlan",
    "cached_progress",
    "compute_with_retries",
    "first_batch_description",
    "load_model_for",
    "plan_execution",
    "prepare_cpu",
    "run_header",
    "split_failures",
    "store",
]


@dataclass
class ExecutionPlan:
    """A request's runs as keyed against the cache: the model's identity and the dtype that
    entered every key, and each run's missing samples."""

    cache: ResultsCache
    identity: dict[str, Any]
    dtype: str
    jobs: list[Job]

    @property
    def missing(self) -> bool:
        return any(job.missing for job in self.jobs)

    def planned_runs(self) -> list[PlannedRun]:
        return planned_runs(self.jobs)


def plan_execution(
    request: RunRequest,
    db_path: Path | str | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
) -> ExecutionPlan:
    """Key the request's runs and find what the cache lacks, before any model is loaded.

    An impossible device (or ``--max-memory``) is refused before the cache is asked; a hub
    model that is not cached is downloaded (unless offline, ``on_stage`` hearing it) so that its
    identity at the request's revision can be read. ``auto`` dtype is first resolved without
    importing torch; only when something is missing does torch decide it (should the two
    differ, the runs are keyed again with torch's answer), so a request whose runs are all
    cached imports neither torch nor the model.

    Raises DatasetError, ModelLoadError (both ValueError), CacheError or RunnerError with a
    one-line message.
    """
    check_device(request.device, request.device_map, request.max_memory)
    cache = ResultsCache(db_path)
    ensure_model(request, on_stage)
    identity = request_identity(request)
    dtype = resolve_dtype(request.dtype, request.device, allow_torch=False)
    jobs = plan_jobs(request, cache, identity, dtype)
    if not jobs:
        raise DatasetError(str(request.dataset), "no response types to compute")
    if any(job.missing for job in jobs):
        if "torch" not in sys.modules and on_stage is not None:
            on_stage(LoadStage("imports", "importing torch and transformers"))
        checked = resolve_dtype(request.dtype, request.device, allow_torch=True)
        if checked != dtype:  # torch knows better than the device files
            dtype = checked
            jobs = plan_jobs(request, cache, identity, dtype)
    return ExecutionPlan(cache, identity, dtype, jobs)


def cached_progress(plan: ExecutionPlan, job: Job) -> RunProgress:
    """The progress of a run with nothing missing; a run an earlier call left cancelled,
    failed or interrupted with every sample stored is marked complete now, and says so."""
    marked = complete_if_stored(plan.cache, job.run_id)
    return Tally(job).progress("cached", MARKED_COMPLETE if marked else "")


# ---- loading ----------------------------------------------------------------------------------


def prepare_cpu(request: RunRequest) -> int:
    """This process's CPU arithmetic for a computation, before its model is loaded: subnormals
    flushed and torch's threads set (``--cpu-threads``, auto: this process's share of the
    CPUs). Returns the threads in use."""
    from layerscope.analysis.compute.numerics import (
        flush_subnormals_for_this_process,
        use_cpu_threads,
    )

    flush_subnormals_for_this_process()
    return use_cpu_threads(request.cpu_threads)


def first_batch_description(loaded: LoadedModel) -> str:
    """The last loading stage's words; on a CPU with the threads it computes on."""
    if loaded.device.type != "cpu":
        return "computing the first batch"
    import torch

    threads = torch.get_num_threads()
    return f"computing the first batch on {threads} CPU thread{'s' * (threads != 1)}"


def load_model_for(
    request: RunRequest, dtype: str, on_stage: Callable[[LoadStage], None] | None = None
) -> LoadedModel:
    """The request's model as its runs were keyed: at its revision, in the planned ``dtype``,
    placed by its device and device map; ``on_stage`` hears each step, ending with "first
    batch".

    Every process that computes loads through here (with a device map under torchrun, each
    rank spreads its own replica). RunnerError for ``--method reference`` with layers
    offloaded to disk (their weights have no gradient to read).
    """
    from layerscope.analysis.base.setting_values import parse_max_memory
    from layerscope.analysis.models.loading import load_model

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
        adapter=request.adapter,
    )
    if request.settings.method == "reference" and loaded.offloaded_to_disk:
        raise RunnerError(
            f"{mention('method')} reference needs every weight's gradient, and the device map "
            f"offloaded layers to disk; give {mention('max_memory')} more room or use "
            f"{mention('method')} fast"
        )
    if on_stage is not None:
        on_stage(LoadStage("first batch", first_batch_description(loaded)))
    return loaded


# ---- what a run is begun with -----------------------------------------------------------------


def run_header(
    request: RunRequest,
    plan: ExecutionPlan,
    job: Job,
    loaded: LoadedModel,
    targets: Sequence[TargetInfo],
    **provenance: Any,
) -> RunHeader:
    """The header a run is begun (or resumed) with: its settings record, and this session's
    provenance with ``provenance`` added (``world_size`` under torchrun). The provenance says
    how many samples the request asked for (``requested``: ``--limit`` applied; a shard's
    record gives the whole request's, and ``shard_requested`` its share), so that whoever
    reads the run knows its target."""
    share = {"shard_requested": len(job.selected)} if job.shard_record else {}
    return RunHeader(
        job.run_id,
        model=loaded.name,
        dataset=job.source.dataset,
        response_type=job.source.response_type,
        mode=request.settings.mode,
        samples_total=len(job.samples),
        targets=targets,
        settings=_settings_record(request, job, plan.identity, plan.dtype),
        provenance={
            **_provenance(request, loaded, plan.dtype),
            "requested": len(job.selected),
            **share,
            **job.shard_record,
            **provenance,
        },
    )


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


# ---- computing and storing --------------------------------------------------------------------


class ChunkFailed(RunnerError):
    """Computing a group of samples raised, and so did each of them alone: the fault is not
    one sample's. ``error`` is the group's error; the message is its one line."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(one_line(error, with_type=True))
        self.error = error


def compute_with_retries(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    settings: ComputeSettings,
    cancel: threading.Event | None = None,
) -> Iterator[BatchResult | SkippedSample]:
    """The engine's batches for ``samples``; when computing them raises, the samples not yet
    computed are computed one at a time, so one bad sample cannot sink the others.

    A sample that fails alone (or runs out of memory even alone) comes back as a
    :class:`SkippedSample`: a failure, recorded and retried on the next call. ChunkFailed
    when no sample succeeded, the group's computation nor any sample's alone. A disk that
    refuses a write (full, over quota, read-only: ``storage_errno``) is no sample's fault and
    nothing could be stored after it: it propagates at once, unretried.
    """
    from layerscope.analysis.compute.engine import compute_statistics

    computed: set[int] = set()
    try:
        for batch in compute_statistics(loaded, list(samples), settings, cancel):
            computed.update(r.index for r in batch.results)
            computed.update(s.index for s in batch.skipped)
            yield batch
        return
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as error:
        if storage_errno(error) is not None:
            raise
        group_error = error
    succeeded = bool(computed)
    one_at_a_time = replace(settings, batch_size=1)
    for sample in [s for s in samples if s.index not in computed]:
        if cancel is not None and cancel.is_set():
            return
        try:
            for batch in compute_statistics(loaded, [sample], one_at_a_time, cancel):
                succeeded = succeeded or bool(batch.results or batch.skipped)
                yield batch
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as sample_error:
            if storage_errno(sample_error) is not None:
                raise
            yield SkippedSample(sample.index, one_line(sample_error, with_type=True))
    if not succeeded:
        raise ChunkFailed(group_error) from group_error


def split_failures(batch: BatchResult) -> tuple[BatchResult, list[SkippedSample]]:
    """Out-of-memory skips are failures (retried later), not properties of the sample."""
    failed = [s for s in batch.skipped if s.retryable]
    if not failed:
        return batch, []
    kept = [s for s in batch.skipped if not s.retryable]
    return replace(batch, skipped=kept), failed


def store(
    run: StoredRun,
    tally: Tally,
    computed: BatchResult | SkippedSample,
    by_index: Mapping[int, Sample],
) -> RunProgress:
    """One item of :func:`compute_with_retries` stored in its own transaction and counted."""
    if isinstance(computed, SkippedSample):  # failed alone
        run.write(BatchResult([], [], 0, 0), by_index, failed=[computed])
        tally.add([], 0, 1)
        return tally.progress("running", f"sample {computed.index} failed: {computed.reason}")
    kept, failed = split_failures(computed)
    run.write(kept, by_index, failed=failed)
    tally.add(kept.results, len(kept.skipped), len(failed))
    return tally.progress("running")
