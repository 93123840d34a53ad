"""Data-parallel computing under torchrun: every rank computes, rank 0 alone writes the cache.

Why this shape: a request is many independent samples, so replicas of the model on several
devices (or nodes) scale it without any gradient communication. What they must share is the
plan and the cache, and DuckDB allows one writer; a shared cache file across nodes would also
need a shared filesystem. So rank 0 owns both: it plans the missing samples of every run of the
request (resuming exactly as :func:`layerscope.analysis.runner.execute` does), opens the cache,
and hands out work *on request*: a worker asks for a unit (one batch: sample records of one
run), computes it with the engine, and sends the :class:`BatchResult` back with its next
request; rank 0 stores each batch in one transaction, as a single process does, and replies
with the next unit. Units go out longest first (by text length), so with skewed lengths
(detailed chains of thought are ten times longer than bare answers) the long ones do not end
up last on one rank: the slowest rank finishes close to the others.

Rank 0 also computes, as one more worker, in a thread of its own (its main thread stores and
yields progress, a second thread answers the other ranks): on a GPU node rank 0 has a GPU like
the others, and on two CPU ranks a coordinator that only coordinated would halve the
throughput (``benchmarks/bench_distributed.py`` measures it).

Workers receive the sample records themselves, so they never read the data files nor open the
cache; they need only the model. The messages are pickled Python objects over a gloo process
group (the control plane; no tensor collective is ever used, so gloo serves CUDA ranks too and
the results need no trip through a GPU).

Faults: rank 0 stores every batch as it arrives, so whatever happens the stored batches stay
and the same command computes only what is missing. A signal (Ctrl-C through torchrun, or
torchrun tearing the job down because a rank died) sets the cancel event: rank 0 stops handing
out units, stores what is still in flight (waiting at most :data:`GRACE_SECONDS`, and not at
all for a rank whose heartbeat has stopped: gloo does not notice a dead peer), and marks
unfinished runs cancelled; a lost connection to a rank, or one silent for a minute, marks them
failed with the reason. Either way no run stays marked running.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis import runner
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import DatasetError
from layerscope.analysis.errors import mention, one_line
from layerscope.analysis.lifecycle import StoredRun
from layerscope.analysis.planning import (
    Job,
    PlannedRun,
    RunnerError,
    RunRequest,
    check_device,
    model_identity,
    plan_jobs,
    planned_runs,
    resolve_dtype,
)
from layerscope.analysis.records import BatchResult, LoadStage, RunHeader, Sample, SkippedSample
from layerscope.analysis.runner import RunProgress
from layerscope.analysis.settings import parse_max_memory

if TYPE_CHECKING:
    from layerscope.analysis.models import LoadedModel

__all__ = [
    "GRACE_SECONDS",
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

# How long rank 0 waits, once cancelled, for batches still in flight on other ranks (torchrun
# kills what is left 30 s after its own signal, so this stays below that).
GRACE_SECONDS = 20.0
# A batch on a large model takes minutes; the control plane must not time out waiting for one.
_GROUP_TIMEOUT = timedelta(days=1)
_POLL_SECONDS = 0.2  # how often rank 0's store loop looks at the cancel event while it waits
# gloo does not notice a peer that died while a receive waits on it, so each worker ticks a
# counter in the job's key-value store (torchrun's); once cancelled, rank 0 stops waiting for
# a rank whose counter stood still for _SILENT_SECONDS; not cancelled, it calls a rank that
# stood still for _LOST_SECONDS lost (long: a starved machine must not fail a healthy job).
_HEARTBEAT_SECONDS = 0.5
_SILENT_SECONDS = 3.0
_LOST_SECONDS = 60.0


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


def _visible_gpus(environ: Mapping[str, str]) -> list[str]:
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    from layerscope.analysis.planning import _cuda_guess, _nvidia_devices

    return [str(i) for i in range(_nvidia_devices())] if _cuda_guess() else []


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
    visible = _visible_gpus(environ)
    if not visible:
        if device.startswith("cuda"):
            raise RunnerError(f"{mention('device')} {device}: CUDA is not available on this node")
        return "cpu"  # auto without GPUs
    if gpus_per_replica:
        group = replica_gpus(environment.local_rank, gpus_per_replica, visible)
        environ["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        return "cuda:0"  # the first of the replica's GPUs; the device map spreads the rest
    if environment.local_rank >= len(visible):
        raise RunnerError(
            f"local rank {environment.local_rank} has no GPU: this node has {len(visible)} "
            "(start at most one process per GPU)"
        )
    return f"cuda:{environment.local_rank}"


# ---- the work ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One batch of one run, as handed to a rank: the sample records themselves."""

    number: int
    run_id: str
    samples: tuple[Sample, ...]

    @property
    def length(self) -> int:
        return sum(len(s.prompt) + len(s.output) for s in self.samples)


def plan_units(jobs: Sequence[Job], batch_size: int) -> list[Unit]:
    """The missing samples of every job as batches, longest first.

    Within a run, samples are grouped by length (less padding in a batch; batch composition
    does not change the numbers); across runs, the longest batches go out first, so that the
    last units handed out are short and the ranks finish close together.
    """
    size = max(1, batch_size)
    batches: list[tuple[str, tuple[Sample, ...]]] = []
    for job in jobs:
        ordered = sorted(job.missing, key=lambda s: (-(len(s.prompt) + len(s.output)), s.index))
        for start in range(0, len(ordered), size):
            batches.append((job.run_id, tuple(ordered[start : start + size])))
    units = [Unit(0, run_id, samples) for run_id, samples in batches]
    units.sort(key=lambda unit: -unit.length)
    return [replace(unit, number=number) for number, unit in enumerate(units)]


def compute_unit(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    settings: Any,
    cancel: threading.Event | None,
) -> tuple[list[BatchResult], list[SkippedSample]]:
    """The engine's batches for ``samples`` and the samples that failed alone.

    As in the single-process runner: when the batch raises, its samples are computed one at a
    time, and a sample that fails alone is a failure (retried on the next call).
    """
    from layerscope.analysis.engine import compute_statistics

    try:
        return list(compute_statistics(loaded, list(samples), settings, cancel)), []
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception:
        pass
    batches: list[BatchResult] = []
    failures: list[SkippedSample] = []
    one_at_a_time = replace(settings, batch_size=1)
    for sample in samples:
        if cancel is not None and cancel.is_set():
            break
        try:
            batches.extend(compute_statistics(loaded, [sample], one_at_a_time, cancel))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as error:
            failures.append(SkippedSample(sample.index, one_line(error, with_type=True)))
    return batches, failures


@dataclass
class _Setup:
    """What rank 0 tells every rank once it has planned (``error`` when planning failed)."""

    dtype: str = ""
    compute: bool = False
    error: str = ""


@dataclass
class _Report:
    """A rank's message to rank 0: the unit it computed (if any) and whether it stops."""

    rank: int
    unit: int | None = None
    batches: list[BatchResult] = field(default_factory=list)
    failures: list[SkippedSample] = field(default_factory=list)
    final: bool = False  # the rank stops after this report (cancelled or failed)
    error: str = ""


def _init_group() -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=_GROUP_TIMEOUT)
    return dist


def _send(dist: Any, message: Any, destination: int) -> None:
    """One pickled object to one rank: its size, then its bytes (tensors on the CPU)."""
    import torch

    payload = torch.frombuffer(bytearray(pickle.dumps(message)), dtype=torch.uint8)
    dist.send(torch.tensor([payload.numel()], dtype=torch.int64), dst=destination)
    dist.send(payload, dst=destination)


def _receive(dist: Any, source: int | None = None) -> tuple[Any, int]:
    """The next object from ``source`` (from any rank when None) and the rank that sent it.

    Written here rather than ``recv_object_list``, which cannot receive from any rank. The
    ranks of one job trust each other (they run the same command): the bytes are unpickled.
    """
    import torch

    size = torch.zeros(1, dtype=torch.int64)
    sender = dist.recv(size, src=source)
    payload = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.recv(payload, src=sender)
    return pickle.loads(payload.numpy().tobytes()), sender


def _heartbeat_key(rank: int) -> str:
    return f"layerscope/heartbeat/{rank}"


def _store(dist: Any) -> Any:
    return dist.distributed_c10d._get_default_store()


def _beat(store: Any, rank: int, stop: threading.Event) -> None:
    while not stop.wait(_HEARTBEAT_SECONDS):
        try:
            store.add(_heartbeat_key(rank), 1)
        except Exception:
            return  # the job is going down


class _Pulse:
    """Rank 0's view of the workers' heartbeats: which have gone silent."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.seen: dict[int, tuple[int, float]] = {}  # rank -> (count, when it last moved)

    def silent(self, rank: int, seconds: float = _SILENT_SECONDS) -> bool:
        try:
            count = int(self.store.add(_heartbeat_key(rank), 0))
        except Exception:
            return True
        now = time.monotonic()
        last = self.seen.get(rank)
        if last is None or last[0] != count:
            self.seen[rank] = (count, now)
            return False
        return now - last[1] > seconds


def _broadcast(dist: Any, setup: _Setup | None) -> _Setup:
    box = [setup]
    dist.broadcast_object_list(box, src=0)
    received = box[0]
    assert isinstance(received, _Setup)
    return received


def _load(request: RunRequest, dtype: str, on_stage: Callable[[LoadStage], None] | None) -> Any:
    from layerscope.analysis.models import load_model

    # before torch starts its worker threads; auto threads: this rank's share of the machine
    runner.prepare_cpu(request)
    # With --gpus-per-replica K > 1 the CLI asks for device_map="auto" (replica_device has
    # already narrowed the visible GPUs to the rank's own group).
    return load_model(
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


# ---- ranks other than 0 -----------------------------------------------------------------------


def serve(request: RunRequest, cancel: threading.Event | None = None) -> None:
    """A worker rank: wait for rank 0's plan, then compute units until told to stop.

    Never opens the cache nor reads the data files. With ``cancel`` set (a signal), it sends
    what it has finished and stops. Raises RunnerError when loading or computing fails as a
    whole (after telling rank 0, which marks the runs failed).
    """
    dist = _init_group()
    rank = dist.get_rank()
    setup = _broadcast(dist, None)
    if setup.error or not setup.compute:
        return  # rank 0 says why (or that everything is cached)
    beating = threading.Event()
    threading.Thread(
        target=_beat, args=(_store(dist), rank, beating), name="layerscope-heartbeat", daemon=True
    ).start()
    try:
        _serve_units(dist, rank, request, setup, cancel)
    finally:
        beating.set()


def _serve_units(
    dist: Any, rank: int, request: RunRequest, setup: _Setup, cancel: threading.Event | None
) -> None:
    try:
        loaded = _load(request, setup.dtype, None)
    except Exception as error:
        _send(dist, _Report(rank, final=True, error=one_line(error)), 0)
        raise
    report = _Report(rank)
    while True:
        _send(dist, report, 0)
        if report.final:
            return
        unit, _ = _receive(dist, 0)
        if unit is None:
            return
        batches, failures = compute_unit(loaded, unit.samples, request.settings, cancel)
        stopping = cancel is not None and cancel.is_set()
        report = _Report(rank, unit.number, batches, failures, final=stopping)


# ---- rank 0 -----------------------------------------------------------------------------------


class _Dispenser:
    """The units not yet handed out, longest first (none once stopped), and which rank holds
    which unit now."""

    def __init__(self, units: Sequence[Unit], stop: threading.Event) -> None:
        self._units = list(reversed(units))  # pop() from the end takes the longest
        self._lock = threading.Lock()
        self._stop = stop
        self.held: dict[int, int] = {}  # rank -> unit number it is computing

    def take(self, rank: int) -> Unit | None:
        with self._lock:
            self.held.pop(rank, None)
            if self._stop.is_set() or not self._units:
                return None
            unit = self._units.pop()
            self.held[rank] = unit.number
            return unit

    def returned(self, rank: int) -> None:
        with self._lock:
            self.held.pop(rank, None)

    def holders(self) -> list[int]:
        with self._lock:
            return list(self.held)


def _answer_ranks(
    dist: Any, world_size: int, dispenser: _Dispenser, events: queue.Queue[Any]
) -> None:
    """Rank 0's second thread: receive each report, pass it on, reply with the next unit."""
    active = set(range(1, world_size))
    try:
        while active:
            report, source = _receive(dist)
            events.put(("report", report))
            if report.final:
                dispenser.returned(source)
                active.discard(source)
                continue
            unit = dispenser.take(source)
            _send(dist, unit, source)
            if unit is None:
                active.discard(source)
    except Exception as error:
        events.put(("lost", one_line(error, with_type=True)))
    finally:
        events.put(("ranks finished", None))


def _compute_here(
    loaded: LoadedModel,
    settings: Any,
    dispenser: _Dispenser,
    events: queue.Queue[Any],
    cancel: threading.Event,
) -> None:
    """Rank 0's computing thread: one more worker, reporting through the same queue."""
    from layerscope.analysis.engine import flush_subnormals_for_this_process

    flush_subnormals_for_this_process()
    try:
        while (unit := dispenser.take(0)) is not None:
            batches, failures = compute_unit(loaded, unit.samples, settings, cancel)
            events.put(("report", _Report(0, unit.number, batches, failures)))
    except BaseException as error:
        events.put(("report", _Report(0, final=True, error=one_line(error, with_type=True))))
    finally:
        events.put(("local finished", None))


_CANCELLED = threading.Event()
_CANCELLED.set()


def execute(
    request: RunRequest,
    db_path: Path | str | None = None,
    cancel: threading.Event | None = None,
    on_plan: Callable[[list[PlannedRun]], None] | None = None,
    on_stage: Callable[[LoadStage], None] | None = None,
    compute_on_coordinator: bool = True,
) -> Iterator[RunProgress]:
    """:func:`layerscope.analysis.runner.execute`, over all ranks when run under torchrun.

    Alone (no torchrun environment) it is the runner's ``execute``. On rank 0 of a torchrun
    job it yields the same stream of :class:`RunProgress` (counts and rates over all ranks);
    the other ranks run :func:`serve` instead. ``compute_on_coordinator=False`` leaves the
    computing to the other ranks (for measurements).
    """
    environment = detect()
    if environment is None:
        yield from runner.execute(request, db_path, cancel, on_plan, on_stage)
        return
    if not environment.coordinator:
        raise RunnerError(f"rank {environment.rank} serves rank 0; only rank 0 executes")
    yield from _coordinate(
        request,
        environment,
        db_path,
        cancel or threading.Event(),
        on_plan,
        on_stage,
        compute_on_coordinator,
    )


def _coordinate(
    request: RunRequest,
    environment: RankEnvironment,
    db_path: Path | str | None,
    cancel: threading.Event,
    on_plan: Callable[[list[PlannedRun]], None] | None,
    on_stage: Callable[[LoadStage], None] | None,
    compute_here: bool,
) -> Iterator[RunProgress]:
    dist = _init_group()
    try:
        check_device(request.device)
        cache = ResultsCache(db_path)
        identity = model_identity(request.model)
        dtype = resolve_dtype(request.dtype, request.device, allow_torch=True)
        jobs = plan_jobs(request, cache, identity, dtype)
        if not jobs:
            raise DatasetError(str(request.dataset), "no response types to compute")
    except BaseException as error:
        _broadcast(dist, _Setup(error=one_line(error)))
        raise
    missing = any(job.missing for job in jobs)
    _broadcast(dist, _Setup(dtype=dtype, compute=missing))
    if on_plan is not None:
        on_plan(planned_runs(jobs))
    if not missing:
        for job in jobs:
            yield runner._Tally(job).progress("cached")
        return
    loaded = _load(request, dtype, on_stage)
    targets = loaded.targets(request.settings.modules)
    if on_stage is not None:
        on_stage(LoadStage("first batch", runner.first_batch_description(loaded)))
    yield from _store_all(
        request, environment, dist, cache, jobs, loaded, targets, identity, dtype, cancel,
        compute_here,
    )  # fmt: skip


def _store_all(
    request: RunRequest,
    environment: RankEnvironment,
    dist: Any,
    cache: ResultsCache,
    jobs: Sequence[Job],
    loaded: LoadedModel,
    targets: Any,
    identity: dict[str, Any],
    dtype: str,
    cancel: threading.Event,
    compute_here: bool,
) -> Iterator[RunProgress]:
    stop = threading.Event()  # no more units: cancelled, or a rank was lost
    runs: dict[str, StoredRun] = {}
    tallies: dict[str, runner._Tally] = {}
    left: dict[str, int] = {}  # samples of each open run not yet stored
    by_index: dict[str, dict[int, Sample]] = {}
    for job in jobs:
        tally = runner._Tally(job)
        if not job.missing:
            yield tally.progress("cached")
            continue
        header = RunHeader(
            job.run_id,
            model=loaded.name,
            dataset=job.source.dataset,
            response_type=job.source.response_type,
            mode=request.settings.mode,
            samples_total=len(job.samples),
            targets=targets,
            settings=runner._settings_record(request, job, identity, dtype),
            provenance={
                **runner._provenance(request, loaded, dtype),
                "world_size": environment.world_size,
            },
        )
        stored = StoredRun(cache, header)
        stored.__enter__()
        runs[job.run_id] = stored
        tallies[job.run_id] = tally
        left[job.run_id] = len(job.missing)
        by_index[job.run_id] = {s.index: s for s in job.missing}
        yield tally.progress("running")
    units = {unit.number: unit for unit in plan_units(jobs, request.settings.batch_size)}
    dispenser = _Dispenser(list(units.values()), stop)
    events: queue.Queue[Any] = queue.Queue()
    threads = [
        threading.Thread(
            target=_answer_ranks,
            args=(dist, environment.world_size, dispenser, events),
            name="layerscope-ranks",
            daemon=True,
        )
    ]
    if compute_here:
        threads.append(
            threading.Thread(
                target=_compute_here,
                args=(loaded, request.settings, dispenser, events, cancel),
                name="layerscope-compute",
                daemon=True,
            )
        )
    failure = ""
    grace_ends: float | None = None
    pulse = _Pulse(_store(dist))
    try:
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            if cancel.is_set():
                stop.set()
                if grace_ends is None:
                    grace_ends = time.monotonic() + GRACE_SECONDS
            try:
                kind, payload = events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if grace_ends is None:
                    lost = [r for r in dispenser.holders() if r and pulse.silent(r, _LOST_SECONDS)]
                    if lost:
                        failure = failure or f"rank {lost[0]} stopped answering"
                        break
                    continue
                waiting = [r for r in dispenser.holders() if r == 0 or not pulse.silent(r)]
                if not waiting or time.monotonic() > grace_ends:
                    break  # the ranks still holding a unit are gone; their units stay missing
                continue
            if kind in ("ranks finished", "local finished"):
                running -= 1
            elif kind == "lost":
                failure = failure or f"lost a rank: {payload}"
                stop.set()
            elif kind == "report":
                report: _Report = payload
                if report.error:
                    failure = failure or f"rank {report.rank}: {report.error}"
                    stop.set()
                if report.unit is None:
                    continue
                unit = units[report.unit]
                yield from _store_report(
                    runs[unit.run_id], tallies[unit.run_id], report, by_index[unit.run_id]
                )
                left[unit.run_id] -= _handled(report)
                if left[unit.run_id] <= 0:
                    done = runs.pop(unit.run_id)
                    done.__exit__(None, None, None)
                    yield tallies[unit.run_id].progress(done.status, done.message)
    except BaseException as error:
        stop.set()
        for stored in runs.values():
            stored.__exit__(type(error), error, None)
        raise
    stop.set()
    for run_id, stored in list(runs.items()):
        if failure:
            lost = RunnerError(f"{failure}; run the same command to resume")
            stored.__exit__(RunnerError, lost, None)
        else:
            stored.cancel = _CANCELLED  # unfinished without a failure: cancelled, resumable
            stored.__exit__(None, None, None)
        yield tallies[run_id].progress(stored.status, stored.message)
    if failure and not cancel.is_set():
        raise RunnerError(f"{failure}; finished batches are stored, run the same command again")


def _handled(report: _Report) -> int:
    return sum(len(b.results) + len(b.skipped) for b in report.batches) + len(report.failures)


def _store_report(
    stored: StoredRun, tally: runner._Tally, report: _Report, by_index: dict[int, Sample]
) -> Iterator[RunProgress]:
    """Each batch of a report in its own transaction, as the single-process runner does."""
    for batch in report.batches:
        kept, failed = runner._split_failures(batch)
        stored.write(kept, by_index, failed=failed)
        tally.add(kept.results, len(kept.skipped), len(failed))
        yield tally.progress("running")
    for failure in report.failures:
        stored.write(BatchResult([], [], 0, 0), by_index, failed=[failure])
        tally.add([], 0, 1)
        yield tally.progress("running", f"sample {failure.index} failed: {failure.reason}")
