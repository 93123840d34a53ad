"""What the ranks of a torchrun job say to each other: the units of work, the messages, and the
heartbeats that tell rank 0 a rank is still alive.

Why a module of its own: rank 0 (:mod:`~layerscope.analysis.runs.coordinator`) and the other ranks
(:mod:`~layerscope.analysis.runs.distributed`) must agree on every message, so both import them from
here. The messages are pickled Python objects over a gloo process group (the control plane; no
tensor collective is ever used, so gloo serves CUDA ranks too and the results need no trip
through a GPU). A unit carries the sample records themselves, so a worker never reads the data
files nor opens the cache.

gloo does not notice a peer that died while a receive waits on it, so each worker ticks a
counter in the job's key-value store (torchrun's) and rank 0 reads them through :class:`Pulse`.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from layerscope.analysis.base.records import BatchResult, Sample, SkippedSample
from layerscope.analysis.compat.torch_distributed import default_store
from layerscope.analysis.runs.planning import Job

__all__ = [
    "LOST_SECONDS",
    "Pulse",
    "Report",
    "Setup",
    "Unit",
    "beat",
    "broadcast",
    "init_group",
    "key_value_store",
    "plan_units",
    "receive",
    "send",
]

# A batch on a large model takes minutes; the control plane must not time out waiting for one.
_GROUP_TIMEOUT = timedelta(days=1)
# Each worker ticks its counter every _HEARTBEAT_SECONDS; once cancelled, rank 0 stops waiting
# for a rank whose counter stood still for _SILENT_SECONDS; not cancelled, it calls a rank that
# stood still for LOST_SECONDS lost (long: a starved machine must not fail a healthy job).
_HEARTBEAT_SECONDS = 0.5
_SILENT_SECONDS = 3.0
LOST_SECONDS = 60.0


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


# ---- the messages -----------------------------------------------------------------------------


@dataclass
class Setup:
    """What rank 0 tells every rank once it has planned (``error`` when planning failed)."""

    dtype: str = ""
    compute: bool = False
    error: str = ""


@dataclass
class Report:
    """A rank's message to rank 0: what it computed of a unit (if any) and whether it stops.

    ``computed``: the engine's batches and the samples that failed alone, as
    :func:`~layerscope.analysis.runs.execution.compute_with_retries` yields them.
    """

    rank: int
    unit: int | None = None
    computed: list[BatchResult | SkippedSample] = field(default_factory=list)
    final: bool = False  # the rank stops after this report (cancelled or failed)
    error: str = ""

    @property
    def handled(self) -> int:
        """Samples of the unit this report accounts for (stored, skipped or failed)."""
        return sum(
            1 if isinstance(c, SkippedSample) else len(c.results) + len(c.skipped)
            for c in self.computed
        )


def init_group() -> Any:
    """``torch.distributed``, its gloo process group started (once per process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=_GROUP_TIMEOUT)
    return dist


def send(dist: Any, message: Any, destination: int) -> None:
    """One pickled object to one rank: its size, then its bytes (tensors on the CPU)."""
    import torch

    payload = torch.frombuffer(bytearray(pickle.dumps(message)), dtype=torch.uint8)
    dist.send(torch.tensor([payload.numel()], dtype=torch.int64), dst=destination)
    dist.send(payload, dst=destination)


def receive(dist: Any, source: int | None = None) -> tuple[Any, int]:
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


def broadcast(dist: Any, setup: Setup | None) -> Setup:
    """Rank 0's :class:`Setup` to every rank (rank 0 passes it, the others None)."""
    box = [setup]
    dist.broadcast_object_list(box, src=0)
    received = box[0]
    assert isinstance(received, Setup)
    return received


# ---- heartbeats -------------------------------------------------------------------------------


def _heartbeat_key(rank: int) -> str:
    return f"layerscope/heartbeat/{rank}"


def key_value_store(dist: Any) -> Any:
    """The job's key-value store (torchrun's), where the heartbeats are counted."""
    return default_store(dist)


def beat(store: Any, rank: int, stop: threading.Event) -> None:
    """A worker's heartbeat thread: tick this rank's counter until ``stop`` is set."""
    while not stop.wait(_HEARTBEAT_SECONDS):
        try:
            store.add(_heartbeat_key(rank), 1)
        except Exception:
            return  # the job is going down


class Pulse:
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
