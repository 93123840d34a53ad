"""Every message the explorer's widgets and workers send, in one place.

Messages are past-tense facts ("this happened"), dataclasses so their fields are obvious. Worker
threads talk to the UI only by posting these (post_message is thread-safe), which keeps all
widget updates on the UI thread. Payload types from analysis/ are referenced loosely (Any) so
that importing this module never imports the cache or the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass(eq=False)
class _Fact(Message):
    """Base: Textual initialises dataclass messages through Message.__post_init__."""


# --- picking -------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelChosen(_Fact):
    """The model picker settled on a model spec; `check` is its ModelCheck (None if unknown)."""

    spec: str
    ok: bool
    has_chat_template: bool
    num_layers: int | None = None


@dataclass(eq=False)
class DatasetChosen(_Fact):
    """The dataset picker settled on a dataset (a bundled name or a path) and its sources."""

    dataset: str
    sources: list[Any]  # ResponseTypeSource


@dataclass(eq=False)
class SettingsChanged(_Fact):
    """A field of the settings form changed (the cached-status column may change with it)."""


@dataclass(eq=False)
class PlanComputed(_Fact):
    """The runner's plan for the current picks: which runs exist and how much is cached."""

    token: int
    planned: list[Any]  # PlannedRun
    error: str | None = None


# --- computing -----------------------------------------------------------------------------


@dataclass(eq=False)
class RunStarted(_Fact):
    """A compute worker planned its request: these runs will be computed (or resumed)."""

    request_id: int
    description: str
    planned: list[Any]  # PlannedRun: run_id, dataset, response_type, total, cached

    @property
    def run_ids(self) -> list[str]:
        return [item.run_id for item in self.planned]


@dataclass(eq=False)
class RunProgressed(_Fact):
    """A batch landed in the cache (or a run changed status)."""

    request_id: int
    progress: Any  # RunProgress


@dataclass(eq=False)
class RunEnded(_Fact):
    """A compute worker finished: completed, cancelled or failed (message says why)."""

    request_id: int
    outcome: str  # "complete" | "cancelled" | "failed"
    message: str = ""


@dataclass(eq=False)
class ProblemReported(_Fact):
    """Something went wrong that the user must see (notification and log panel)."""

    title: str
    message: str
    severity: str = "error"


# --- browsing ------------------------------------------------------------------------------


@dataclass(eq=False)
class CacheScanned(_Fact):
    """The list of runs in the cache was read (None when the cache could not be read)."""

    runs: list[Any] | None  # RunInfo
    error: str | None = None


@dataclass(eq=False)
class ComparisonChanged(_Fact):
    """The set of runs overlaid in the chart changed."""

    run_ids: list[str]


@dataclass(eq=False)
class RunFocused(_Fact):
    """The user pointed at one run (runs browser cursor or an explicit open)."""

    run_id: str
    open_tab: str | None = None  # switch to this tab ("chart", "samples", ...)


@dataclass(eq=False)
class ChartLoaded(_Fact):
    """Curves and comparison tables for the chart were read from the cache."""

    token: int
    curves: list[Any]  # LayerCurve
    mad_rows: list[Any] = field(default_factory=list)  # MadRow
    differences: list[Any] = field(default_factory=list)  # (label_a, label_b, projection, RelDiff)
    error: str | None = None


@dataclass(eq=False)
class SamplesLoaded(_Fact):
    """A run's samples were read, sorted as asked."""

    token: int
    run_id: str
    rows: list[Any]  # SampleRow
    error: str | None = None


@dataclass(eq=False)
class CosinesLoaded(_Fact):
    """A run's mean layer-by-layer cosine matrix for one projection was read."""

    token: int
    run_id: str
    projection: str
    matrix: list[list[float]]
    error: str | None = None


@dataclass(eq=False)
class SampleCurveLoaded(_Fact):
    """One sample's curve and its run's mean curve were read (sample detail view)."""

    run_id: str
    index: int
    metric: str
    projection: str
    sample: list[float]
    mean: list[float]
    error: str | None = None
