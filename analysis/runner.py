"""Running computations against the cache: compute what is missing, nothing twice.

Why a runner apart from the engine: the engine turns samples into statistics and knows nothing
of files, keys or resumption; the CLI and the TUI both need the same orchestration around it:
resolve the dataset into response-type sources, key each (model, data file, response type,
settings) run, skip what the cache already holds, load the model only when something is
missing, store each batch in one transaction, and leave every run marked complete, cancelled or
failed, whatever happens. Both call :func:`execute`, a plain generator that yields a
:class:`RunProgress` per stored batch and checks a ``threading.Event`` between batches.

A run's key (:func:`run_key`) is a SHA-256 over the model's identity (config hash, weights
fingerprint, hub revision; not its display name, so the same weights in two folders share runs),
the data file's bytes, the response type, the settings that change the numbers
(``ComputeSettings.key_fields``: mode, system prompt in instruct mode, max length, module set,
spectra, entry statistics, cosines, statistics version) and the dtype. ``--limit`` is not part
of the key: it selects which samples of the run to compute now; a later call computes more.

The dtype ``auto`` is resolved before keying (bfloat16 or float16 on CUDA, float32 otherwise,
as the loader does). :func:`execute` asks torch; :func:`plan`, which must not import torch,
asks torch only if it is already imported and otherwise guesses CUDA from the device files, so
on an unusual machine ``plan`` may call a run missing that ``execute`` then finds cached.

Failures: a sample the engine skips (no response token left after truncation, ...) is recorded
as skipped with its reason and never retried. When computing a chunk raises, its samples are
retried one at a time, so one bad sample cannot sink a run; a sample that fails alone (or runs
out of memory even alone) is recorded as failed and retried on the next call. A chunk in which
no sample succeeds stops the run as failed with the error.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import (
    DatasetError,
    ResponseTypeSource,
    discover_sources,
    file_sha256,
    read_samples,
    resolve_dataset,
)
from layerscope.analysis.errors import one_line
from layerscope.analysis.lifecycle import StoredRun, package_version
from layerscope.analysis.records import (
    BatchResult,
    ComputeSettings,
    Sample,
    SampleResult,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.settings import DEFAULTS, check_values, split_by_target

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
    "run_key",
]

# Batches per engine call: a chunk that raises is retried sample by sample.
CHUNK_BATCHES = 8


class RunnerError(RuntimeError):
    """A computation that cannot start or went wrong as a whole; one line for the user."""


@dataclass
class RunRequest:
    """What to compute: a model over the response types of a dataset, with settings.

    Build it with :meth:`from_settings` from the settings record's values (what the CLI and
    the explorer do); the defaults below are the record's.
    """

    model: str
    dataset: str | Path
    types: list[str] | None = None
    settings: ComputeSettings = field(default_factory=ComputeSettings)
    limit: int | None = DEFAULTS["limit"]  # the first N samples of each type (or N drawn)
    sample_seed: int | None = DEFAULTS["sample_seed"]
    dtype: str = DEFAULTS["dtype"]
    device: str = DEFAULTS["device"]
    trust_remote_code: bool = DEFAULTS["trust_remote_code"]

    @classmethod
    def from_settings(
        cls,
        model: str,
        dataset: str | Path,
        types: Sequence[str] | None,
        values: Mapping[str, Any],
    ) -> RunRequest:
        """A request from settings values by name (the rest default); SettingError if one is
        not accepted."""
        compute_fields, request_fields = split_by_target(check_values(values))
        return cls(
            model=model,
            dataset=dataset,
            types=list(types) if types else None,
            settings=ComputeSettings(**compute_fields),
            **request_fields,
        )


@dataclass
class RunProgress:
    """Where one run stands after a batch (or at its start and end).

    ``status``: running, complete, cancelled, failed, or cached (nothing was missing).
    ``done``/``total`` count this request's samples of the run (``--limit`` applies), cached
    ones included.
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


@dataclass(frozen=True)
class PlannedRun:
    """One run a request involves and how much of it the cache already holds."""

    run_id: str
    dataset: str
    response_type: str
    total: int  # samples this request asks for
    cached: int  # of those, already stored (or deliberately skipped)
    samples_in_file: int = 0
    path: Path | None = None

    @property
    def missing(self) -> int:
        return self.total - self.cached


def resolve_sources(request: RunRequest) -> list[ResponseTypeSource]:
    """The request's response-type sources, filtered by ``types`` (in the dataset's order)."""
    sources = discover_sources(resolve_dataset(request.dataset))
    if request.types:
        available = [s.response_type for s in sources]
        unknown = [t for t in request.types if t not in available]
        if unknown:
            raise RunnerError(
                f"--types: {unknown[0]!r} is not in {request.dataset} "
                f"(it has {', '.join(dict.fromkeys(available))})"
            )
        sources = [s for s in sources if s.response_type in request.types]
    return sources


def select_samples(samples: Sequence[Sample], limit: int | None, seed: int | None) -> list[Sample]:
    """The first ``limit`` samples, or ``limit`` drawn with ``seed`` (in index order)."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 0:
        raise RunnerError(f"--limit must not be negative, got {limit}")
    if seed is None:
        return list(samples[:limit])
    chosen = random.Random(seed).sample(list(samples), limit)
    return sorted(chosen, key=lambda s: s.index)


def _cuda_guess() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0"))


def resolve_dtype(dtype: str, device: str, allow_torch: bool = True) -> str:
    """The dtype ``load_model`` will use, as a name (``auto`` resolved; see module docs)."""
    if dtype != "auto":
        return dtype
    if device.startswith("cpu") or device.startswith("mps"):
        return "float32"
    if allow_torch or "torch" in sys.modules:
        import torch

        wants_cuda = device.startswith("cuda") or device == "auto"
        if wants_cuda and torch.cuda.is_available():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    return (
        "bfloat16"
        if (device.startswith("cuda") or device == "auto") and _cuda_guess()
        else "float32"
    )


def _identity_key(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k != "name"}


def run_key(
    identity: dict[str, Any],
    data_sha256: str,
    response_type: str,
    settings: ComputeSettings,
    dtype: str,
) -> str:
    """The content hash that identifies a run (see module docs)."""
    payload = {
        "model": _identity_key(identity),
        "data_sha256": data_sha256,
        "response_type": response_type,
        "dtype": dtype,
        **settings.key_fields(),
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass
class _Job:
    source: ResponseTypeSource
    samples: list[Sample]
    selected: list[Sample]
    data_sha256: str
    run_id: str
    missing: list[Sample]


def _jobs(
    request: RunRequest, cache: ResultsCache, identity: dict[str, Any], dtype: str
) -> list[_Job]:
    jobs = []
    for source in resolve_sources(request):
        samples = read_samples(source)
        selected = select_samples(samples, request.limit, request.sample_seed)
        digest = file_sha256(source.path)
        run_id = run_key(identity, digest, source.response_type, request.settings, dtype)
        done = cache.done_indices(run_id)
        missing = [s for s in selected if s.index not in done]
        jobs.append(_Job(source, samples, selected, digest, run_id, missing))
    return jobs


def _model_identity(model: str) -> dict[str, Any]:
    from layerscope.analysis.models import model_identity

    return model_identity(model)


def plan(request: RunRequest, db_path: Path | str | None = None) -> list[PlannedRun]:
    """The runs ``execute`` would touch and how much of each is cached (no torch imported)."""
    cache = ResultsCache(db_path)
    identity = _model_identity(request.model)
    dtype = resolve_dtype(request.dtype, request.device, allow_torch=False)
    return _planned(_jobs(request, cache, identity, dtype))


def _planned(jobs: Sequence[_Job]) -> list[PlannedRun]:
    return [
        PlannedRun(
            job.run_id,
            job.source.dataset,
            job.source.response_type,
            len(job.selected),
            len(job.selected) - len(job.missing),
            len(job.samples),
            job.source.path,
        )
        for job in jobs
    ]


def _settings_record(
    request: RunRequest, job: _Job, identity: dict[str, Any], dtype: str
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
        "method": request.settings.method,
        "limit": request.limit,
        "sample_seed": request.sample_seed,
    }
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

    def __init__(self, job: _Job) -> None:
        self.job = job
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
            self.loss_sum += result.loss
            self.loss_count += 1

    def progress(self, status: str, message: str = "") -> RunProgress:
        job = self.job
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.handled / elapsed if self.handled else 0.0
        remaining = len(job.missing) - self.handled
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
        )


def execute(
    request: RunRequest,
    db_path: Path | str | None = None,
    cancel: threading.Event | None = None,
    on_plan: Callable[[list[PlannedRun]], None] | None = None,
) -> Iterator[RunProgress]:
    """Compute every missing sample of the request's runs, yielding progress per batch.

    ``on_plan`` receives the runs this call touches (as :func:`plan` would return them, from
    the same reading of the data and the cache) before anything is computed, so a caller that
    shows a plan does not plan twice.

    Raises DatasetError, ModelLoadError (both ValueError), CacheError or RunnerError with a
    one-line message. Closing the generator (or KeyboardInterrupt) marks the current run
    cancelled; its stored batches stay and the next call resumes after them.
    """
    cache = ResultsCache(db_path)
    identity = _model_identity(request.model)
    dtype = resolve_dtype(request.dtype, request.device, allow_torch=True)
    jobs = _jobs(request, cache, identity, dtype)
    if not jobs:
        raise DatasetError(str(request.dataset), "no response types to compute")
    if on_plan is not None:
        on_plan(_planned(jobs))
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
            from layerscope.analysis.engine import flush_subnormals_for_this_process
            from layerscope.analysis.models import load_model

            flush_subnormals_for_this_process()  # before torch starts its worker threads
            loaded = load_model(
                request.model,
                dtype=dtype,
                device=request.device,
                trust_remote_code=request.trust_remote_code,
            )
            targets = loaded.targets(request.settings.modules)
        stored_run = StoredRun(
            cache,
            job.run_id,
            model=loaded.name,
            dataset=job.source.dataset,
            response_type=job.source.response_type,
            mode=request.settings.mode,
            samples_total=len(job.samples),
            targets=targets,
            settings=_settings_record(request, job, identity, dtype),
            provenance=_provenance(request, loaded, dtype),
            cancel=cancel,
        )
        with stored_run:
            tally = _Tally(job)  # rates from here: model loading is not computing
            yield tally.progress("running")
            yield from _compute_job(request, stored_run, loaded, job, tally, cancel)
        yield tally.progress(stored_run.status, stored_run.message)
        if stored_run.status == "cancelled":
            return


def _compute_job(
    request: RunRequest,
    run: StoredRun,
    loaded: LoadedModel,
    job: _Job,
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
                raise RunnerError(
                    f"{job.source.label}: computing failed for every sample of a chunk: "
                    f"{one_line(first_error, with_type=True)}"
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
