"""The results cache: every computed statistic in one DuckDB file, never computed twice.

Why DuckDB: the interesting questions ("mean nuclear norm of q by layer over 100,000 samples,
only responses of 50-200 tokens") are GROUP BY queries over tens of millions of rows, which a
columnar engine answers in well under a second, from one file a user can copy between machines.

Why a package with a facade: callers (the CLI, the TUI, the runner, the paper-format import)
see one class, :class:`ResultsCache`, whose methods are thin; each concern lives in its own
module with the SQL it runs, so a change to locking, the schema or one query is read and
reviewed in one place:

* :mod:`.connection`: short-lived connections, file locks, retries, sessions (its docstring
  explains why no connection is kept between calls); :mod:`.errors`: the cache's errors;
  :mod:`.write_ahead_log`: telling a damaged log from a short one;
* :mod:`.schema`: the tables and the version a file holds; :mod:`.migrations`: the steps
  between versions; :mod:`.cosine_packing`: how a sample's cosines are laid out in their row;
* :mod:`.runs`: finding runs by id or prefix, listing them;
* :mod:`.aggregates`: the per-layer sums behind every curve;
* :mod:`.reads`: one run's samples, spectra, cosines, skipped samples;
* :mod:`.exports`: Parquet/CSV tables and the per-sample stream for the paper format;
* :mod:`.writes` and :mod:`.inserts`: beginning, storing a batch of, and finishing a run, or
  (for imports) all of it in one transaction;
* :mod:`.merging`, with :mod:`.stored_samples` and :mod:`.merge_conflicts`: joining the runs of
  other cache files into this one;
* :mod:`.health`: what ``layerscope doctor`` checks, and its two repairs.

The records it returns are in :mod:`layerscope.analysis.base.records`; the statistics that turn
stored sums into means and confidence intervals in :mod:`layerscope.analysis.curves.statistics`. The
names below are re-exported here for the code that imports them from the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from layerscope.analysis.base.records import (
    METRICS,
    BatchResult,
    LayerCurve,
    LayerSums,
    RunHeader,
    RunInfo,
    Sample,
    SampleRow,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.cache import (
    aggregates,
    exports,
    kept_tests,
    reads,
    runs,
    schema,
    writes,
)
from layerscope.analysis.cache.connection import CacheFile, default_db_path, default_lock_timeout
from layerscope.analysis.cache.errors import (
    CacheError,
    CacheLockedError,
    SchemaVersionError,
    StorageError,
    UnknownRunError,
    storage_errno,
)
from layerscope.analysis.cache.schema import SCHEMA_VERSION
from layerscope.analysis.curves.significance import ProjectionSignificance
from layerscope.analysis.curves.statistics import curve_from_sums

__all__ = [
    "METRICS",
    "SCHEMA_VERSION",
    "CacheError",
    "CacheLockedError",
    "LayerCurve",
    "ResultsCache",
    "RunInfo",
    "SampleRow",
    "SchemaVersionError",
    "StorageError",
    "UnknownRunError",
    "default_db_path",
    "storage_errno",
]


class ResultsCache:
    """The results of every run, in one DuckDB file shared safely between processes.

    Holds no connection between calls (see :mod:`.connection`), so it is cheap to create, safe
    to keep around in a UI, and usable as a context manager for symmetry. Reading never creates
    the file: a cache that does not exist yet simply has no runs.
    """

    def __init__(self, path: Path | str | None = None, *, lock_timeout: float | None = None):
        self._file = CacheFile(
            Path(path).expanduser() if path is not None else default_db_path(),
            default_lock_timeout() if lock_timeout is None else lock_timeout,
        )

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def files(self) -> dict[Path, str]:
        """The cache's files on disk (the database and its write-ahead log) with what each is:
        what an export must never write over."""
        return exports.cache_files(self.path)

    @property
    def lock_timeout(self) -> float:
        return self._file.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self._file.lock_timeout = seconds

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"ResultsCache({str(self.path)!r})"

    # ---- the file ---------------------------------------------------------------------------

    def upgrade(self) -> int:
        """Create or upgrade the file's schema now; returns the schema version."""
        with self._file.connection(write=True):
            pass
        return SCHEMA_VERSION

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Reads of this thread inside the block share one read-only connection (a command's
        reads open the file once, not once each; while it lasts no process can write the file,
        so it spans one command or one load). See :meth:`.connection.CacheFile.session`."""
        return self._file.session()

    def checkpoint(self) -> None:
        """Move the write-ahead log into the main file (readers then open faster)."""
        self._file.checkpoint()

    def rebuild_summaries(self) -> None:
        """Recompute every run's per-layer sums from its statistics rows (after bulk loads
        that bypass ``write_batch``)."""
        with self._file.transaction() as con:
            schema.rebuild_curve_sums(con)

    # ---- runs -------------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        return runs.list_runs(self._file)

    def run(self, run_id: str) -> RunInfo:
        """The run with this id or unique id prefix (:class:`UnknownRunError` otherwise)."""
        return runs.find(self._file, run_id)

    def targets(self, run_id: str) -> list[TargetInfo]:
        """The run's measured matrices with the model's parameter names."""
        return reads.targets(self._file, run_id)

    def done_indices(self, run_id: str) -> set[int]:
        """Indices that need no computing: stored samples and deliberately skipped ones
        (failed samples are retried). Empty for a run that does not exist yet."""
        return reads.done_indices(self._file, run_id)

    # ---- curves -----------------------------------------------------------------------------

    def curve_sums(
        self,
        run_ids: Sequence[str],
        metric: str,
        projections: Sequence[str] | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> list[LayerSums]:
        """What :meth:`curves` averages: count, sum and sum of squares by layer, per run and
        projection, as stored (or, with ``response_tokens``, as scanned)."""
        return aggregates.curve_sums(self._file, run_ids, metric, projections, response_tokens)

    def curves(
        self,
        run_ids: Sequence[str],
        metric: str,
        projections: Sequence[str] | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> list[LayerCurve]:
        """Mean, std, 95% CI and count of ``metric`` by layer, per run and projection.

        Samples whose statistic is not finite at any layer are left out of that projection's
        curve and counted in ``excluded_nonfinite``. ``response_tokens`` (inclusive) restricts
        the samples by response length. Curves come in the order of ``run_ids``, then
        projections in q, k, v, o, gate, up, down order.
        """
        sums = self.curve_sums(run_ids, metric, projections, response_tokens)
        return [curve_from_sums(s) for s in sums]

    # ---- one run's rows ---------------------------------------------------------------------

    def samples(
        self,
        run_id: str,
        sort_by: str = "loss",
        descending: bool = True,
        limit: int | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> list[SampleRow]:
        """The run's samples with per-sample means (over layers and projections) of each
        statistic, sorted by ``sort_by`` (index, loss, token counts or a statistic); NaN last."""
        return reads.samples(self._file, run_id, sort_by, descending, limit, response_tokens)

    def sample_curve(self, run_id: str, index: int, metric: str, projection: str) -> list[float]:
        """One sample's statistic by layer for one projection (NaN where not stored)."""
        return reads.sample_curve(self._file, run_id, index, metric, projection)

    def sample_spectra(self, run_id: str, index: int, projection: str) -> list[list[float]]:
        """One sample's singular values by layer (empty lists when spectra were not kept; NaN
        for a value stored as empty)."""
        return reads.sample_spectra(self._file, run_id, index, projection)

    def spectrum_by_rank(self, run_id: str, projection: str) -> dict[int, list[tuple[float, int]]]:
        """Per layer, the mean over samples of the k-th largest stored singular value (k = 1,
        2, ...) and how many samples have one: ``{layer: [(mean, samples), ...]}``; empty when
        the run kept no spectra (see :mod:`layerscope.analysis.results.spectra`)."""
        return reads.spectrum_by_rank(self._file, run_id, projection)

    def sample_fields(self, run_id: str) -> dict[str, dict[int, float]]:
        """The samples' own numeric fields from their data file: name -> {index: value}
        (empty for runs stored before the cache kept them, and for imported runs)."""
        return reads.sample_fields(self._file, run_id)

    def sample_means(
        self,
        run_id: str,
        statistic: str,
        projection: str | None = None,
        layers: tuple[int, int] | None = None,
    ) -> dict[int, float]:
        """Per sample, the mean of a statistic over layers ``layers`` (inclusive; all by
        default) of one projection (all by default); NaN where a value is not finite."""
        return reads.sample_means(self._file, run_id, statistic, projection, layers)

    def layer_cosines(self, run_id: str, projection: str) -> list[list[float]]:
        """Mean over samples of the L x L cosine similarity between layers' gradients
        (empty when the run has none for this projection; NaN in cells no sample had)."""
        return reads.layer_cosines(self._file, run_id, projection)

    def pair_cosines(self, run_id: str, pair: str) -> list[float]:
        """Mean over samples of the per-layer cosine between two projections' gradients
        (pair "q-o" or "k-v"; empty when not measured)."""
        return reads.pair_cosines(self._file, run_id, pair)

    def sample_values(
        self,
        run_id: str,
        metric: str,
        projections: Sequence[str] | None = None,
        response_tokens: tuple[int, int] | None = None,
    ) -> dict[str, dict[int, list[float]]]:
        """Per projection, each sample's ``metric`` by layer (NaN where not stored or not
        finite; ``loss``: projection "loss", one value): the data of a paired test."""
        return aggregates.sample_values(self._file, run_id, metric, projections, response_tokens)

    def shared_samples(self, run_a: str, run_b: str) -> tuple[int, int]:
        """Sample indices both runs stored, and how many of them have the same prompt."""
        return reads.shared_samples(self._file, run_a, run_b)

    def kept_tests(
        self, run_a: str, run_b: str, settings: str, state: str
    ) -> list[ProjectionSignificance] | None:
        """The tests of b against a kept for these settings and this state (digests the caller
        makes), or None (:mod:`.kept_tests`)."""
        with self._file.reading() as con:
            if con is None:
                return None
            number_a = runs.resolve(con, self.path, run_a)[0]
            number_b = runs.resolve(con, self.path, run_b)[0]
            return kept_tests.kept(con, number_a, number_b, settings, state)

    def keep_tests(
        self,
        run_a: str,
        run_b: str,
        settings: str,
        state: str,
        tests: Sequence[ProjectionSignificance],
    ) -> None:
        """Keep a pair's tests for next time, best-effort: inside a reading session when it
        ends, else now; never waiting for a lock nor failing (a cache being written by another
        process, or one the user may not write, keeps nothing)."""
        rows = list(tests)

        def keep() -> None:
            file = CacheFile(self.path, lock_timeout=0)
            with contextlib.suppress(CacheError, OSError), file.transaction() as con:
                number_a = runs.resolve(con, self.path, run_a)[0]
                number_b = runs.resolve(con, self.path, run_b)[0]
                kept_tests.keep(con, number_a, number_b, settings, state, rows)

        if not self._file.after_session(keep):
            keep()

    def skipped(self, run_id: str) -> list[SkippedSample]:
        """Samples that were not measured (skipped or failed), with their reasons."""
        return reads.skipped(self._file, run_id)

    # ---- exports ----------------------------------------------------------------------------

    def iter_sample_statistics(
        self, run_id: str
    ) -> Iterator[
        tuple[dict[str, Any], list[tuple[int, str, dict[str, float], list[float] | None]]]
    ]:
        """Every stored sample in index order with its matrices, for exports.

        Yields ``(sample, matrices)``: the sample's row as a dict (index, loss, prompt_tokens,
        response_tokens, instruction, input, output, and ``cosines``: its own cosines as
        ``{kind: {name: (layers, cosines row-major)}}``, empty for runs stored before schema
        version 4 or computed without cosines) and a list of ``(layer, projection,
        statistics, spectrum or None)``. Reads in chunks of samples, one short connection each.
        """
        return exports.iter_sample_statistics(self._file, run_id)

    def export_table(
        self,
        run_ids: str | Sequence[str],
        path: Path | str,
        file_format: str,
        *,
        force: bool = False,
    ) -> int:
        """Write one run's statistics, or several runs' as one tidy table, as Parquet or CSV.

        One row per run, sample and matrix. Columns: run_id, model, dataset, response_type and
        mode (so that rows of several runs stay apart), sample_index, loss, prompt_tokens,
        response_tokens, layer, projection, parameter and one per statistic. The runs are
        read in one snapshot and written in the order given (a run given twice once). Returns
        the number of rows written. ``path`` is a file or
        :data:`~layerscope.analysis.base.outputs.STDOUT` (CSV only). The cache's own files are
        refused, an existing file is replaced only with ``force``, and a file appears only when
        complete (:func:`~layerscope.analysis.base.outputs.open_output`: refusals and write errors
        are an ``OutputError``). No user-supplied text is ever spliced into SQL.
        """
        return exports.export_table(self._file, run_ids, path, file_format, force=force)

    # ---- writing (the runner through layerscope.analysis.runs.lifecycle.StoredRun) ---------------

    def begin_run(self, header: RunHeader) -> RunInfo:
        """Create the run, or reopen an existing one for more samples, and mark it running.

        ``header.provenance`` describes this compute session (versions, device, batch size, ...); it is
        stored as the run's current provenance and appended to its ``sessions`` history. Refuses
        a run that a live process on this host is computing right now.
        """
        return writes.begin_run(self._file, header)

    def write_batch(
        self,
        run_id: str,
        batch: BatchResult,
        samples_by_index: Mapping[int, Sample],
        failed: Sequence[SkippedSample] = (),
    ) -> int:
        """Store one batch in one transaction; returns how many samples were new.

        Samples already stored (for instance by another process computing the same run) are
        left alone, so no sample is ever stored twice. ``failed`` records samples whose
        computation raised; a sample that is stored later replaces its failure record.
        """
        with self._file.existing():  # the run was begun: a file gone now was removed
            return writes.write_batch(self._file, run_id, batch, samples_by_index, failed)

    def finish_run(self, run_id: str, status: str, message: str = "") -> RunInfo:
        """Mark the run complete, cancelled or failed and close its current session."""
        with self._file.existing():
            return writes.finish_run(self._file, run_id, status, message)

    def complete_stored_run(self, run_id: str) -> RunInfo:
        """Mark complete a run whose samples are all stored (the caller found none missing) but
        that was left cancelled, failed or interrupted: stopped once its last batch was stored.
        Its sessions stay as they ended; the run's provenance says when it was completed and
        what it was (``completed``). A complete run, or one a live process is computing, is left
        as it is. Returns the run as it is now."""
        return writes.complete_stored_run(self._file, run_id)

    def store_complete_run(
        self,
        header: RunHeader,
        batches: Iterable[tuple[BatchResult, Mapping[int, Sample]]],
    ) -> RunInfo:
        """Begin the run, store every batch and mark it complete, in ONE transaction.

        For a run that is one thing, such as an imported file: if anything fails on the way
        (the ``batches`` iterable raising, DuckDB refusing a row, Ctrl-C, a killed process),
        the cache is as it was, with no run. ``batches`` is consumed inside the transaction, so
        it can stream (memory stays bounded), but the file stays opened read-write until the
        last batch is stored: other processes wait for it. A run already stored in part (by an
        older import, batch by batch) is reopened and completed; samples already stored are
        skipped, as in :meth:`write_batch`. The runner keeps one transaction per batch.
        """
        return writes.store_complete_run(self._file, header, batches)
