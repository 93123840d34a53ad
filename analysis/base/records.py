"""Plain records shared by the engine, the cache, the comparisons, the CLI and the UI.

They live apart from the engine so that the cache and the UI can use them without importing
torch: a user browsing cached results never pays for it. They live apart from the cache, too
(what it returns: :class:`RunInfo`, :class:`LayerSums`, :class:`LayerCurve`,
:class:`SampleRow`), so that the comparisons and the UI can name them without importing DuckDB
code; it imports only the settings record (for ComputeSettings' defaults and key).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from layerscope.analysis.base.choices import DEFAULT_SYSTEM_PROMPT as DEFAULT_SYSTEM_PROMPT
from layerscope.analysis.base.settings import DEFAULTS, keyed_names

Mode = Literal["base", "instruct"]
ModuleSet = Literal["attn", "mlp", "all"]
Method = Literal["fast", "reference"]
Factorisation = Literal["per-matrix", "batched", "cpu-threads"]
Init = Literal["trained", "random"]
Routes = Literal["auto", "factors", "formed"]

ATTENTION_PROJECTIONS = ("q", "k", "v", "o")
MLP_PROJECTIONS = ("gate", "up", "down")
# Every projection in the one order layers, tables, curves and files list them.
PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS

# Per-matrix statistics, in the order the cache and exports use. Names say what they are; the
# paper's short names (S_sum, S_max, ...) appear only in the paper-format import and export.
MATRIX_STATISTICS = (
    "mean",
    "max",
    "min",
    "frobenius_norm",
    "nuclear_norm",
    "sigma_max",
    "sigma_min",
    "sigma1_ratio",
    "nuclear_per_loss",
    "effective_rank",
    "stable_rank",
)
# The statistics that need every entry of the gradient matrix, not just its spectrum.
ENTRY_STATISTICS = ("mean", "max", "min")

# The cosine between the gradients of one projection at layers i and i + 1 of a sample (the
# follow-up paper's layer-to-layer similarity, ``matrix[i][i+1]``), drawn at layer i: read from
# each sample's stored cosines (runs computed with cosines, or imported with ``cosine_sim``), so
# its curve has one layer fewer than the model.
ADJACENT_COSINE = "adjacent_cosine"
# What a curve can average: every per-matrix statistic, the adjacent-layer cosine, and the
# per-sample loss.
METRICS = (*MATRIX_STATISTICS, ADJACENT_COSINE, "loss")
RUN_STATUSES = ("running", "complete", "cancelled", "failed")
STATISTICS_VERSION = 1


@dataclass(frozen=True)
class LoadStage:
    """A step of getting the model ready before the first batch: what a user waits through.

    ``step`` is one of :data:`LOAD_STEPS`; ``description`` says it in words ("loading
    weights"); ``done``/``total`` count what the step has finished where it can tell (the
    weight tensors loaded so far), else None. On a 7B model these steps take minutes, so the CLI
    and the explorer show each one as it begins.
    """

    step: str
    description: str
    done: int | None = None
    total: int | None = None


# In the order a run goes through them.
LOAD_STEPS = ("download", "imports", "tokenizer", "weights", "device", "first batch")


@dataclass(frozen=True)
class Sample:
    """One record of a dataset: an instruction (plus optional input) and a response."""

    index: int  # position in its file, 0-based; stable key for resume
    instruction: str
    output: str
    input: str = ""
    # The record's own numbers besides its text (quality scores: ifd_gpt2, reward, ...); the
    # cache keeps them per sample so gradients can be related to them.
    numeric_fields: Mapping[str, float] = field(default_factory=dict, hash=False)
    # A chat record's turns before its response, as (role, text): instruct mode writes them
    # through the chat template (the instruction is then their texts, one per line).
    turns: tuple[tuple[str, str], ...] = ()

    @property
    def prompt(self) -> str:
        """The prompt as the paper's scripts build it: instruction, then input on a new line."""
        if self.input:
            return f"{self.instruction}\n{self.input}"
        return self.instruction


@dataclass(frozen=True)
class ComputeSettings:
    """Everything besides model and data that the engine needs; defaults from the settings
    record (:mod:`~layerscope.analysis.base.settings`), which also says which fields are keyed."""

    mode: Mode = DEFAULTS["mode"]
    system_prompt: str = DEFAULTS["system_prompt"]
    max_length: int = DEFAULTS["max_length"]
    modules: ModuleSet = DEFAULTS["modules"]
    method: Method = DEFAULTS["method"]
    spectra: bool = DEFAULTS["spectra"]  # keep the whole singular-value spectrum of each matrix
    entry_statistics: bool = DEFAULTS["entry_statistics"]  # mean/max/min: need the full matrix
    cosines: bool = DEFAULTS["cosines"]  # layer-by-layer cosine matrices, q-o / k-v cosines
    batch_size: int = DEFAULTS["batch_size"]  # not keyed: it does not change the numbers
    tokens_per_batch: int | None = DEFAULTS["tokens_per_batch"]  # None: from free memory
    init: Init = DEFAULTS["init"]  # the trained weights, or the architecture freshly initialised
    init_seed: int = DEFAULTS["init_seed"]  # the seed of a random initialisation
    streaming: bool = DEFAULTS["streaming"]  # not keyed: measure modules during the backward
    factorisation: Factorisation = DEFAULTS["factorisation"]  # not keyed: how QR/SVD run
    routes: Routes = DEFAULTS["routes"]  # not keyed: which exact route each statistic takes
    checkpointing: bool = DEFAULTS["checkpointing"]  # not keyed: recompute layers in backward

    def key_fields(self) -> dict[str, object]:
        """The fields that identify a run's numbers (the record's keyed compute settings).

        The system prompt counts only in instruct mode, where it is part of the input. The
        initialisation and its seed count only for a random one: a trained run's key is the
        one it had before layerscope knew of random initialisations, so cached runs stay found.
        """
        fields: dict[str, object] = {name: getattr(self, name) for name in keyed_names("compute")}
        if self.mode != "instruct":
            fields["system_prompt"] = None
        if self.init == "trained":
            del fields["init"], fields["init_seed"]
        fields["statistics_version"] = STATISTICS_VERSION
        return fields


@dataclass(frozen=True)
class TargetInfo:
    """One gradient matrix that is measured: a projection of one layer."""

    layer: int
    projection: str  # q, k, v, o, gate, up, down
    parameter: str  # the model's own parameter name; fused parts get a [q]/[k]/[v] suffix
    rows: int  # output features
    cols: int  # input features


@dataclass
class MatrixStatistics:
    """Statistics of one sample's gradient with respect to one target matrix."""

    layer: int
    projection: str
    values: dict[str, float]  # keys from MATRIX_STATISTICS (entry statistics may be absent)
    # descending, all min(rows, cols) values; None in it: a value stored as empty (imports)
    spectrum: Sequence[float | None] | None = None


@dataclass
class SampleResult:
    """Everything measured for one sample."""

    index: int
    loss: float
    prompt_tokens: int
    response_tokens: int
    matrices: list[MatrixStatistics]
    # projection -> L x L cosine similarity between the gradients of layers i and j
    layer_cosines: dict[str, list[list[float]]] = field(default_factory=dict)
    # "q-o" / "k-v" -> per-layer cosine between the two gradients (only where shapes match)
    pair_cosines: dict[str, list[float]] = field(default_factory=dict)
    # projection or pair -> the layers its cosines are between, where not simply 0, 1, 2, ...
    # (an imported file's ``layer_indices``)
    cosine_layers: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedSample:
    """A sample that was not measured, and why. Recorded, never dropped silently."""

    index: int
    reason: str
    # True when the sample itself is fine and a later attempt may succeed (out of memory):
    # the cache records it as failed and a resumed run tries it again.
    retryable: bool = False


@dataclass
class BatchResult:
    """What the engine yields after each batch: the results and its progress."""

    results: list[SampleResult]
    skipped: list[SkippedSample]
    done: int  # samples handled so far in this call (results + skipped)
    total: int  # samples this call was asked for
    seconds: float = 0.0  # wall time of this batch
    forward_backward_seconds: float = 0.0  # of which: the model's forward and backward passes
    statistics_seconds: float = 0.0  # of which: the statistics from the captured gradients


# What no name of a run may hold: control characters (a newline, the escape that starts a
# terminal's colour codes), lone surrogates (no text column holds them) and the Unicode line and
# paragraph separators.
_NOT_IN_NAMES = ("Cc", "Cs", "Zl", "Zp")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a name a run is filed under (its model, dataset or response
    type), or None: every listing, table, chart and file name shows it, so it must be one line
    of printable text, and not empty."""
    if not name.strip():
        return f"expected a name, got {name!r}"
    for position, character in enumerate(name):
        if unicodedata.category(character) in _NOT_IN_NAMES:
            return (
                f"{name!r} holds a control character ({character!r} at character "
                f"{position + 1}); a name is one line of printable text"
            )
    return None


@dataclass(frozen=True)
class RunHeader:
    """What a run is, as it is begun: named once here for the cache's writers, the runner's
    lifecycle and the paper-format import (see ``ResultsCache.begin_run``)."""

    run_id: str
    model: str
    dataset: str
    response_type: str
    mode: str
    samples_total: int
    targets: Sequence[TargetInfo]
    settings: Mapping[str, Any]
    provenance: Mapping[str, Any]


@dataclass(frozen=True)
class RunInfo:
    """One run as stored: what was measured, how far it got, and how it was computed."""

    id: str
    model: str
    dataset: str
    response_type: str
    mode: str
    status: str  # running | complete | cancelled | failed
    samples_total: int
    samples_done: int
    samples_skipped: int
    samples_failed: int
    layers: int
    projections: tuple[str, ...]
    settings: dict
    provenance: dict
    started_at: datetime | None
    finished_at: datetime | None
    # status "cancelled" because the process computing it is gone (killed, or a write-ahead
    # log that lost its last batches), not because anyone cancelled it: resumable all the same
    interrupted: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def samples_missing(self) -> int:
        return max(0, self.samples_total - self.samples_done - self.samples_skipped)

    @property
    def samples_handled(self) -> int:
        """Samples that need no computing: stored, or deliberately skipped."""
        return self.samples_done + self.samples_skipped

    @property
    def samples_requested(self) -> int:
        """The samples the run is to hold: what its last request asked for (``requested`` in
        its provenance, ``--limit`` applied; a shard not merged yet: its share,
        ``shard_requested``), or all ``samples_total`` of the data file where that was not
        recorded (older runs, imports). Never fewer than it holds: an earlier request may
        have asked for more."""
        provenance = self.provenance or {}
        key = "shard_requested" if provenance.get("shard") else "requested"
        requested = provenance.get(key)
        target = requested if isinstance(requested, int) and requested > 0 else self.samples_total
        return max(target, self.samples_handled)


@dataclass(frozen=True)
class LayerSums:
    """What a curve is made of, as the cache keeps it: per layer, the count, sum and sum of
    squares of one statistic over a run's samples, for one projection.

    ``excluded_nonfinite`` samples were left out because the statistic was NaN or infinite at
    some layer. :func:`layerscope.analysis.curves.statistics.curve_from_sums` turns this into a
    :class:`LayerCurve`.
    """

    run_id: str
    projection: str
    sums: dict[int, tuple[int, float, float]]  # layer -> (count, sum, sum of squares)
    excluded_nonfinite: int = 0


@dataclass(frozen=True)
class LayerCurve:
    """The mean of one statistic by layer over a run's samples, for one projection.

    ``count[i]`` samples entered layer i's mean; ``excluded_nonfinite`` samples were left out of
    the whole curve because the statistic was NaN or infinite at some layer (as the paper drops
    them). The half-width of its 95% t confidence interval is
    :func:`~layerscope.analysis.curves.statistics.ci95`, computed where it is shown. For the metric
    ``loss``, which has no layers, the curve has one point at layer 0 and projection ``"loss"``.
    """

    run_id: str
    projection: str
    layers: list[int]
    mean: list[float]
    std: list[float]
    count: list[int]
    excluded_nonfinite: int = 0


@dataclass(frozen=True)
class SampleRow:
    """One measured sample with its per-sample means over layers and projections.

    Token counts are -1 where unknown (runs imported from the paper's files)."""

    index: int
    loss: float
    prompt_tokens: int
    response_tokens: int
    instruction: str
    output: str
    stats: dict[str, float] = field(default_factory=dict)
