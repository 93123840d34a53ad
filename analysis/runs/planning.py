"""Planning a request: which runs it touches, their keys, and what the cache already holds.

Why apart from execution: the explorer shows, before a key is pressed, which response types are
cached for the chosen model and settings, and it must do so without importing torch; execution
needs the same reading of the data and the cache to compute only what is missing. Both go
through :func:`plan_jobs` here, so what the explorer shows is what the runner then does.

A run's key (:func:`run_key`) is a SHA-256 over the model's identity (config hash, weights
fingerprint, the commit of a hub model's snapshot, so that ``--revision`` or ``main`` moving on
makes new runs; not its display name, so the same weights in two folders share runs),
the data file's bytes, the response type, the settings that change the numbers (the settings
record's keyed fields, through ``ComputeSettings.key_fields``: mode, system prompt in instruct
mode, max length, module set, spectra, entry statistics, cosines, statistics version) and the
dtype. Where the layers run (``--device``, ``--device-map``, ``--max-memory``) is not part of
the key: it does not change the numbers. ``--limit`` is not part of the key: it selects which samples of the run to compute now; a
later call computes more.

The dtype ``auto`` is resolved before keying (bfloat16 or float16 on CUDA, float32 otherwise,
as the loader does). Execution asks torch; :func:`plan`, which must not import torch, asks torch
only if it is already imported and otherwise guesses CUDA from the device files, so on an
unusual machine ``plan`` may call a run missing that execution then finds cached.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope.analysis.base.devices import device_file_gpu_count
from layerscope.analysis.base.errors import LayerscopeError, mention
from layerscope.analysis.base.records import ComputeSettings, Sample
from layerscope.analysis.base.setting_values import check_values, split_by_target
from layerscope.analysis.base.settings import DEFAULTS
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import (
    ResponseTypeSource,
    chosen_by,
    discover_sources,
    file_sha256,
    read_samples,
    resolve_dataset,
    type_names,
)
from layerscope.analysis.runs.sharding import shard_of

__all__ = [
    "Job",
    "PlannedRun",
    "RunRequest",
    "RunnerError",
    "check_device",
    "ensure_model",
    "plan",
    "plan_jobs",
    "planned_runs",
    "request_identity",
    "resolve_dtype",
    "resolve_sources",
    "run_key",
    "select_samples",
]


class RunnerError(LayerscopeError, RuntimeError):
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
    cpu_threads: int | None = DEFAULTS["cpu_threads"]  # torch's CPU threads; None: auto
    # large models and hub models (analysis/base/settings.py); revision is keyed via the commit
    device_map: str = DEFAULTS["device_map"]
    max_memory: str | None = DEFAULTS["max_memory"]
    revision: str | None = DEFAULTS["revision"]
    offline: bool = DEFAULTS["offline"]
    adapter: str | None = DEFAULTS["adapter"]  # keyed via its fingerprint in the identity
    gpus: int = DEFAULTS["gpus"]  # the explorer: more than one computes in a torchrun job
    # (I, N): only shard I of N of each run's selected samples (``compute --shard``; not a
    # setting: it splits the work of one request, see :mod:`~layerscope.analysis.runs.sharding`)
    shard: tuple[int, int] | None = None

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
        unknown = [t for t in request.types if not any(chosen_by(s, {t}) for s in sources)]
        if unknown:
            raise RunnerError(
                f"{mention('types')}: {unknown[0]!r} is not in {request.dataset} "
                f"(it has {', '.join(dict.fromkeys(type_names(sources)))})"
            )
        sources = [s for s in sources if chosen_by(s, request.types)]
    return sources


def select_samples(samples: Sequence[Sample], limit: int | None, seed: int | None) -> list[Sample]:
    """The first ``limit`` samples, or ``limit`` drawn with ``seed`` (in index order)."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 0:
        raise RunnerError(f"{mention('limit')} must not be negative, got {limit}")
    if seed is None:
        return list(samples[:limit])
    chosen = random.Random(seed).sample(list(samples), limit)
    return sorted(chosen, key=lambda s: s.index)


def check_device(device: str, device_map: str = "none", max_memory: str | None = None) -> None:
    """Refuse a CUDA device this machine does not have, before any cache look-up or loading.

    Asks torch when it is imported (execution), otherwise the NVIDIA device files, so that a
    request answered from the cache (which never imports torch) is refused the same way: an
    impossible request must never say "cached". The loader asks torch again when it loads.
    With a device map, the max memory setting is parsed here and may name only GPUs there are.
    """
    gpus = _parse_memory(max_memory, device_map)
    if not device.startswith("cuda") and not gpus:
        return
    index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else max(gpus)
    if "torch" in sys.modules:
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    else:
        available = device_file_gpu_count()
    option = (
        f"{mention('device')} {device}"
        if device.startswith("cuda")
        else f"{mention('max_memory')} {max_memory}"
    )
    if available == 0:
        raise RunnerError(f"{option}: CUDA is not available on this machine")
    if index >= available:
        raise RunnerError(
            f"{option}: this machine has {available} CUDA device(s), cuda:0 to cuda:{available - 1}"
        )


def _parse_memory(max_memory: str | None, device_map: str) -> list[int]:
    """The GPU indices the max memory setting names (RunnerError naming it for bad text)."""
    from layerscope.analysis.base.setting_schema import SettingError
    from layerscope.analysis.base.setting_values import parse_max_memory

    try:
        parsed = parse_max_memory(max_memory)
    except SettingError as error:
        raise RunnerError(error.message) from None
    if parsed is not None and device_map == "none":
        raise RunnerError(
            f"{mention('max_memory')} needs a device map ({mention('device_map')} auto, ...)"
        )
    return [key for key in (parsed or {}) if isinstance(key, int)]


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
        if (device.startswith("cuda") or device == "auto") and device_file_gpu_count() > 0
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
class Job:
    """One response type of a request: its samples, the chosen ones, its key, what is missing."""

    source: ResponseTypeSource
    samples: list[Sample]
    selected: list[Sample]
    data_sha256: str
    run_id: str
    missing: list[Sample]
    # With a shard: what the run's provenance records of it (``shard`` "I/N" and
    # ``requested``, the samples of the whole request), so a merge can tell a complete run.
    shard_record: dict[str, Any] = field(default_factory=dict)


def plan_jobs(
    request: RunRequest, cache: ResultsCache, identity: dict[str, Any], dtype: str
) -> list[Job]:
    """Every response type of the request with its samples, key and missing samples."""
    found = []
    for source in resolve_sources(request):
        samples = read_samples(source)
        selected = select_samples(samples, request.limit, request.sample_seed)
        shard_record: dict[str, Any] = {}
        if request.shard is not None:
            index, count = request.shard
            shard_record = {"shard": f"{index}/{count}", "requested": len(selected)}
            selected = shard_of(selected, index, count)
        digest = file_sha256(source.path)
        run_id = run_key(identity, digest, source.response_type, request.settings, dtype)
        done = cache.done_indices(run_id)
        missing = [s for s in selected if s.index not in done]
        found.append(Job(source, samples, selected, digest, run_id, missing, shard_record))
    return found


def request_identity(request: RunRequest) -> dict[str, Any]:
    """The request's model's identity for the key (a hub model's holds its snapshot's commit,
    an adapter's fingerprint is part of it); no network: a hub id that is not cached raises
    ModelNotCached ("will be downloaded")."""
    from layerscope.analysis.models.identity import model_identity

    return model_identity(request.model, request.revision, request.offline, request.adapter)


def ensure_model(request: RunRequest, on_stage: Any = None) -> None:
    """Download the request's hub model if it is not cached (unless offline), so that its
    identity can be read; a cached model costs a look at the cache only."""
    from layerscope.analysis.models.downloads import ensure_model_available

    ensure_model_available(request.model, request.revision, request.offline, on_stage)


def plan(request: RunRequest, db_path: Path | str | None = None) -> list[PlannedRun]:
    """The runs ``execute`` would touch and how much of each is cached (no torch imported)."""
    cache = ResultsCache(db_path)
    identity = request_identity(request)
    dtype = resolve_dtype(request.dtype, request.device, allow_torch=False)
    return planned_runs(plan_jobs(request, cache, identity, dtype))


def planned_runs(jobs: Sequence[Job]) -> list[PlannedRun]:
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
