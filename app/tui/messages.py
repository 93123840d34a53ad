"""Every message the explorer's widgets, services and workers send, in one place.

Messages are past-tense facts ("this happened"), dataclasses so their fields are obvious. Worker
threads talk to the UI only by posting these (post_message is thread-safe), which keeps all
widget updates on the UI thread. Payloads carry the analysis records themselves; their types are
imported under TYPE_CHECKING only, so importing this module never imports the cache, the runner
or a dataset reader (and costs nothing at start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from layerscope.analysis.base.records import LayerCurve, LoadStage, RunInfo, SampleRow
    from layerscope.analysis.curves.significance import ProjectionSignificance
    from layerscope.analysis.datasets import ResponseTypeSource
    from layerscope.analysis.models.inspection import ModelCheck
    from layerscope.analysis.results.compare import MadRow, RelativeDifferenceRow
    from layerscope.analysis.results.spectra import LayerSpectrum
    from layerscope.analysis.runs.runner import PlannedRun, RunProgress


@dataclass(eq=False)
class _Fact(Message):
    """Base: Textual initialises dataclass messages through Message.__post_init__."""


@dataclass(eq=False)
class CacheRead(_Fact):
    """Base of a cache read's result: `token` names the request, `error` one line on failure.

    Both are set by the cache reader (services/cache_reader.py), never by the query itself.
    """

    token: int = field(default=0, kw_only=True)
    error: str | None = field(default=None, kw_only=True)


# --- picking -------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelsListed(_Fact):
    """The model picker's scan found these models: (spec, description) in list order."""

    entries: list[tuple[str, str]]


@dataclass(eq=False)
class ModelChecked(_Fact):
    """A model spec's files were inspected (`typed`: it came from the path field)."""

    spec: str
    check: ModelCheck
    typed: bool


@dataclass(eq=False)
class ModelChosen(_Fact):
    """The model picker settled on a model spec (`ok`: its files make a usable causal LM).

    Also posted, with `ok` False, when the field shows no usable model (a wrong typed path, ""
    for nothing chosen): the cache status of the last usable one no longer applies.
    """

    spec: str
    ok: bool
    has_chat_template: bool
    num_layers: int | None = None


@dataclass(eq=False)
class DatasetDiscovered(_Fact):
    """A dataset spec was read: its sources and sample counts, or the one-line `error`."""

    spec: str
    typed: bool
    sources: list[ResponseTypeSource] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(eq=False)
class PickerSettled(_Fact):
    """A picker's last asked-for check answered: what its field shows is what it holds."""

    picker: str  # "model" or "dataset"


@dataclass(eq=False)
class DatasetChosen(_Fact):
    """The dataset picker settled on a dataset (a bundled name or a path) and its sources.

    No sources: the field shows nothing readable (a wrong path, "" for nothing chosen).
    """

    dataset: str
    sources: list[ResponseTypeSource]


@dataclass(eq=False)
class SettingsChanged(_Fact):
    """A field of the settings form changed (the cached-status column may change with it)."""


@dataclass(eq=False)
class PlanComputed(_Fact):
    """The runner's plan for the current picks: which runs exist and how much is cached."""

    token: int
    planned: list[PlannedRun]
    error: str | None = None


# --- computing -----------------------------------------------------------------------------


@dataclass(eq=False)
class RunStarted(_Fact):
    """A compute worker planned its request: these runs will be computed (or resumed)."""

    request_id: int
    description: str
    planned: list[PlannedRun]

    @property
    def run_ids(self) -> list[str]:
        return [item.run_id for item in self.planned]


@dataclass(eq=False)
class LoadStageReached(_Fact):
    """A compute worker's model loading reached a step, `elapsed` seconds after it started.

    `begins`: the step starts with this update (the weights step also reports each part of
    its progress, `stage.done` of `stage.total`, with `begins` False).
    """

    request_id: int
    stage: LoadStage
    elapsed: float
    begins: bool = True


@dataclass(eq=False)
class RunProgressed(_Fact):
    """A batch landed in the cache (or a run changed status).

    Only the latest matters: a progress of a run still running gives way to the next one of
    the same run waiting behind it in the queue (small batches on a fast GPU land faster than
    a busy UI draws them), so the panel draws and the cache is scanned once for both. A change
    of status (complete, failed, cancelled) is never dropped.
    """

    request_id: int
    progress: RunProgress

    def can_replace(self, message: Message) -> bool:
        """Whether ``message``, queued right behind this one, may supersede it (Textual asks
        the earlier message)."""
        return (
            isinstance(message, RunProgressed)
            and message.request_id == self.request_id
            and message.progress.run_id == self.progress.run_id
            and self.progress.status == "running"
        )


@dataclass(eq=False)
class RunEnded(_Fact):
    """A compute worker finished: completed, cancelled or failed (message says why)."""

    request_id: int
    outcome: str  # "complete" | "cancelled" | "failed"
    message: str = ""
    elapsed: float = 0.0  # seconds from the worker's start to its end
    loading: float | None = None  # of those, seconds until the model was ready (None: no load)


@dataclass(eq=False)
class ProblemReported(_Fact):
    """Something went wrong that the user must see (notification and log panel)."""

    title: str
    message: str
    severity: str = "error"


# --- browsing ------------------------------------------------------------------------------


@dataclass(eq=False)
class CacheScanned(CacheRead):
    """The list of runs in the cache was read (None when the cache could not be read)."""

    runs: list[RunInfo] | None


# The runs by id before the first CacheScanned: none known yet, and none said to be missing
# (the runs browser stays empty rather than say "No runs yet" of a cache it has not read).
RUNS_NOT_READ: Mapping[str, RunInfo] = MappingProxyType({})


@dataclass(eq=False)
class ComparisonChanged(_Fact):
    """The set of runs overlaid in the chart changed."""

    run_ids: list[str]


@dataclass(eq=False)
class ChartViewChanged(_Fact):
    """The chart was asked to draw other runs or another view (what a restart brings back)."""


@dataclass(eq=False)
class PaperTableRequested(_Fact):
    """The user asked for the paper's table of the chart (its Markdown text, and a title)."""

    title: str
    text: str


@dataclass(eq=False)
class RunFocused(_Fact):
    """The user pointed at one run (runs browser cursor or an explicit open)."""

    run_id: str
    open_tab: str | None = None  # switch to this tab ("chart", "samples", ...)


@dataclass(eq=False)
class LengthFilterRequested(_Fact):
    """The user asked to change the response-length filter (the app owns it and asks)."""


@dataclass(eq=False)
class SampleOpened(_Fact):
    """The user opened one sample of a run (the app shows the sample detail screen)."""

    run_id: str
    row: SampleRow
    metric: str


@dataclass(eq=False)
class MarkedSamplesWriteRequested(_Fact):
    """The user asked to write a run's marked samples back as a dataset file (the app asks
    where: widgets do not open screens)."""

    run_id: str
    indices: tuple[int, ...]  # in the order they are to be written
    label: str  # what the selection is, for the file name ("top-5-by-nuclear_norm")


@dataclass(eq=False)
class ChartLoaded(CacheRead):
    """Curves and comparison tables for the chart were read from the cache.

    `significance` holds the tests of each run against the first when they were already
    known for what the runs have stored, else None: they are being computed, and come in a
    `SignificanceTested` of their own (the curves are shown first). `pairs`, `metric` and
    `response_tokens` are what the tests compare; `stored`, each run's stored state as the
    curves were read (the tests refuse a run that has stored more since).
    """

    curves: list[LayerCurve] = field(default_factory=list)
    mad_rows: list[MadRow] = field(default_factory=list)
    differences: list[RelativeDifferenceRow] = field(default_factory=list)
    # each run against the first: the layer-wise tests, per projection (None: not known yet)
    significance: list[ProjectionSignificance] | None = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    metric: str = ""
    response_tokens: tuple[int, int] | None = None
    stored: dict[str, tuple[int, str | None]] = field(default_factory=dict)


@dataclass(eq=False)
class SignificanceTested(CacheRead):
    """The layer-wise tests of the chart's runs against the first were computed (or found:
    each pair is tested once for what its runs have stored), or (`significance` None) were
    not, because a run stored more after the curves were read: they are read again."""

    significance: list[ProjectionSignificance] | None = field(default_factory=list)


@dataclass(eq=False)
class SpectraLoaded(CacheRead):
    """A run's mean singular value by rank, per layer of one projection, was read (empty when
    the run kept no spectra)."""

    run_id: str = ""
    projection: str = ""
    spectra: list[LayerSpectrum] = field(default_factory=list)
    layers: int = 0  # layers with spectra, before thinning to what is drawn


@dataclass(eq=False)
class SamplesLoaded(CacheRead):
    """A run's samples were read, sorted as asked."""

    run_id: str
    rows: list[SampleRow] = field(default_factory=list)


@dataclass(eq=False)
class CosinesLoaded(CacheRead):
    """A run's mean layer-by-layer cosine matrix for one projection was read."""

    run_id: str
    projection: str
    matrix: list[list[float]] = field(default_factory=list)


@dataclass(eq=False)
class SampleCurveLoaded(CacheRead):
    """One sample's curve and its run's mean curve were read (sample detail view)."""

    run_id: str
    index: int
    metric: str
    projection: str
    sample: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)


# --- exporting -----------------------------------------------------------------------------


@dataclass(eq=False)
class ExportWritten(_Fact):
    """The export dialog's write ended: the paths written, or why nothing was (one line)."""

    paths: list[Path] = field(default_factory=list)
    problem: str | None = None
