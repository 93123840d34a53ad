"""Data-parallel computing under torchrun: every rank computes, rank 0 alone writes the cache.

Why this shape: a request is many independent samples, so replicas of the model on several
devices (or nodes) scale it without any gradient communication. What they must share is the
plan and the cache, and both are rank 0's (:mod:`~layerscope.analysis.runs.coordinator`): it keys
and plans the request's runs through the execution core (:mod:`~layerscope.analysis.runs.execution`)
exactly as :func:`layerscope.analysis.runs.runner.execute` does in one process, stores every batch,
and hands out units of work (:mod:`~layerscope.analysis.runs.rank_messages`) to the other ranks,
which :func:`serve` them: they never read the data files nor open the cache, they need only
the model, loaded as rank 0 keyed it (the same revision and dtype).

Device maps: each rank loads a whole replica, and a device map spreads that replica, over the
rank's own GPUs (``--gpus-per-replica`` K narrows ``CUDA_VISIBLE_DEVICES`` to them and asks for
``device_map="auto"``) or over its CPU and disk (``--max-memory``, which rank 0 checks as one
process does). Where the layers run is not part of a run's key, so a device map is meaningful
here and the runs are those one process computes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.devices import node_gpus, show_only
from layerscope.analysis.base.errors import mention, one_line
from layerscope.analysis.base.records import (
    BatchResult,
    ComputeSettings,
    LoadStage,
    Sample,
    SkippedSample,
)
from layerscope.analysis.runs import runner
from layerscope.analysis.runs.coordinator import coordinate
from layerscope.analysis.runs.execution import (
    ChunkFailed,
    compute_with_retries,
    load_model_for,
)
from layerscope.analysis.runs.planning import PlannedRun, RunnerError, RunRequest
from layerscope.analysis.runs.rank_messages import (
    Report,
    Setup,
    Unit,
    beat,
    broadcast,
    init_group,
    key_value_store,
    plan_units,
    receive,
    send,
)
from layerscope.analysis.runs.tally import RunProgress

if TYPE_CHECKING:
    from layerscope.analysis.models.loading import LoadedModel

__all__ = [
    "RankEnvironment",
    "Unit",
    "compute_unit",
    "detect",
    "execute",
    "plan_units",
    "replica_device",
    "replica_gpus",
    "serve",
]


@dataclass(frozen=True)
class RankEnvironment:
    """Where this process stands in a torchrun job (its ``RANK``, ``WORLD_SIZE``, ...)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def coordinator(self) -> bool:
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> RankEnvironment | None:
    """The torchrun environment of this process, or None when it runs alone (no WORLD_SIZE,
    or a world of one, which is a plain single-process run)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    values: dict[str, int] = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        text = environ.get(name, "1" if name.endswith("WORLD_SIZE") else "0")
        try:
            values[name] = int(text)
        except ValueError:
            raise RunnerError(f"torchrun environment: {name}={text!r} is not an integer") from None
    if values["WORLD_SIZE"] <= 1:
        return None
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise RunnerError(
            f"torchrun environment: RANK={values['RANK']} outside WORLD_SIZE={values['WORLD_SIZE']}"
        )
    return RankEnvironment(
        values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"]
    )


# ---- devices ----------------------------------------------------------------------------------


def replica_gpus(local_rank: int, gpus_per_replica: int, visible: Sequence[str]) -> list[str]:
    """The GPUs of this rank's replica: ``visible[local_rank*K : local_rank*K + K]``."""
    if gpus_per_replica < 1:
        raise RunnerError(
            f"{mention('gpus_per_replica')} must be at least 1, got {gpus_per_replica}"
        )
    first = local_rank * gpus_per_replica
    if first + gpus_per_replica > len(visible):
        raise RunnerError(
            f"{mention('gpus_per_replica')} {gpus_per_replica}: local rank {local_rank} needs GPUs "
            f"{first} to {first + gpus_per_replica - 1}, this node has {len(visible)} "
            "(start at most GPUs / K processes per node)"
        )
    return list(visible[first : first + gpus_per_replica])


def replica_device(
    environment: RankEnvironment,
    device: str,
    gpus_per_replica: int | None = None,
    environ: dict[str, str] | None = None,
) -> str:
    """The device this rank loads its replica on, setting ``CUDA_VISIBLE_DEVICES`` in
    ``environ`` (``os.environ``) for a replica spread over several GPUs.

    CPU stays CPU. ``cuda``/``auto`` on a machine with GPUs becomes ``cuda:LOCAL_RANK``; with
    ``gpus_per_replica`` K, the rank sees only its K GPUs (:func:`replica_gpus`) and the model
    is spread over them by a device map. Call it before torch initialises CUDA.
    """
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    assert environ is not None
    if device.startswith("cpu") or device.startswith("mps"):
        return device
    visible = node_gpus(environ)
    if not visible:
        if device.startswith("cuda"):
            raise RunnerError(f"{mention('device')} {device}: CUDA is not available on this node")
        return "cpu"  # auto without GPUs
    if gpus_per_replica:
        group = replica_gpus(environment.local_rank, gpus_per_replica, visible)
        show_only(group, environ)
        return "cuda:0"  # the first of the replica's GPUs; the device map spreads the rest
    if environment.local_rank >= len(visible):
        raise RunnerError(
            f"local rank {environment.local_rank} has no GPU: this node has {len(visible)} "
            "(start at most one process per GPU)"
        )
    return f"cuda:{environment.local_rank}"


# ---- the work ---------------------------------------------------------------------------------


def compute_unit(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    settings: ComputeSettings,
    cancel: threading.Event | None,
) -> list[BatchResult | SkippedSample]:
    """The engine's batches for ``samples`` and the samples that failed alone, as
    :func:`~layerscope.analysis.runs.execution.compute_with_retries` yields them (every rank
    computes through here, rank 0's computing thread too).

    A unit in which every sample fails is reported sample by sample: rank 0 records each
    failure and the job goes on with the other units.
    """
    computed: list[BatchResult | SkippedSample] = []
    with suppress(ChunkFailed):  # each sample's own failure is in ``computed`` already
        for item in compute_with_retries(loaded, samples, settings, cancel):
            computed.append(item)
    return computed


# ---- ranks other than 0 -----------------------------------------------------------------------


def serve(request: RunRequest, cancel: threading.Event | None = None) -> None:
    """A worker rank: wait for rank 0's plan, then compute units until told to stop.

    Never opens the cache nor reads the data files. With ``cancel`` set (a signal), it sends
    what it has finished and stops. Raises RunnerError when loading or computing fails as a
    whole (after telling rank 0, which marks the runs failed).
    """
    dist = init_group()
    rank = dist.get_rank()
    setup = broadcast(dist, None)
    if setup.error or not setup.compute:
        return  # rank 0 says why (or that everything is cached)
    beating = threading.Event()
    threading.Thread(
        target=beat,
        args=(key_value_store(dist), rank, beating),
        name="layerscope-heartbeat",
        daemon=True,
    ).start()
    try:
        _serve_units(dist, rank, request, setup, cancel)
    finally:
        beating.set()


def _serve_units(
    dist: Any, rank: int, request: RunRequest, setup: Setup, cancel: threading.Event | None
) -> None:
    try:
        # the dtype rank 0 keyed the runs with; revision and device map from the same request
        loaded = load_model_for(request, setup.dtype)
    except Exception as error:
        send(dist, Report(rank, final=True, error=one_line(error)), 0)
        raise
    report = Report(rank)
    while True:
        send(dist, report, 0)
        if report.final:
            return
        unit, _ = receive(dist, 0)
        if unit is None:
            return
        computed = compute_unit(loaded, unit.samples, request.settings, cancel)
        stopping = cancel is not None and cancel.is_set()
        report = Report(rank, unit.number, computed, final=stopping)


# ---- rank 0 -----------------------------------------------------------------------------------


def execute(
    request: RunRequest,
    db_path: Path | str | None = None,
    cancel: threading.Event | None = None,
    on_plan: Callable[[list[PlannedRun]], None] | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
    compute_on_coordinator: bool = True,
    *,
    model: LoadedModel | None = None,
    on_model: Callable[[LoadedModel], None] | None = None,
) -> Iterator[RunProgress]:
    """:func:`layerscope.analysis.runs.runner.execute`, over all ranks when run under torchrun.

    Alone (no torchrun environment) it is the runner's ``execute``. On rank 0 of a torchrun
    job it yields the same stream of :class:`RunProgress` (counts and rates over all ranks);
    the other ranks run :func:`serve` instead. ``compute_on_coordinator=False`` leaves the
    computing to the other ranks (for measurements).
    """
    environment = detect()
    if environment is None:
        yield from runner.execute(
            request, db_path, cancel, on_plan, on_stage, model=model, on_model=on_model
        )
        return
    if model is not None or on_model is not None:
        raise RunnerError("a model loaded beforehand is for one process, not a torchrun job")
    if not environment.coordinator:
        raise RunnerError(f"rank {environment.rank} serves rank 0; only rank 0 executes")
    yield from coordinate(
        request,
        environment.world_size,
        db_path,
        cancel or threading.Event(),
        on_plan,
        on_stage,
        compute_unit if compute_on_coordinator else None,
    )
