"""Importing the paper's statistics files into the cache: one file, one run, whole or not at all.

Why a module of its own: of the paper-format modules, this is the only one that writes to the
cache, and its concern is the run rather than the format: the run's key, its header and the one
transaction it is stored in. The lines themselves come checked from :mod:`.paper_parse`.

Why the import is one transaction (:meth:`ResultsCache.store_complete_run`): an imported file is
one run or nothing. A failure of any kind on line 290 (a malformed line, a value DuckDB still
refuses, Ctrl-C, a killed process) leaves no run and the cache as it was; importing the same file
again adds nothing, and a run an older layerscope left half-imported (batch by batch) is
completed. The file is read twice, streaming: first to check every line (and hash the bytes for
the run key) *before* the cache is opened, then, inside the transaction, to store it, so memory
stays bounded even for files with full spectra; a file that changes between the two readings is
refused.

Values stored as empty (not finite, or beyond what the cache's columns hold; see
:mod:`.paper_schema`) are not refused: :class:`PaperImport` counts them and the lines they are
on, and ``layerscope import`` reports them; so are the entries left out because the format does
not know their keys. The names a run is filed under (model, dataset, response type) must be
one line of printable text (:func:`~layerscope.analysis.base.records.name_problem`): they are
shown in every listing and table, where a newline or a terminal's escape would garble it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import (
    PROJECTIONS,
    BatchResult,
    RunHeader,
    RunInfo,
    Sample,
    TargetInfo,
    name_problem,
)
from layerscope.analysis.cache import ResultsCache, UnknownRunError
from layerscope.analysis.cache.schema import INTEGER_MAX
from layerscope.analysis.interchange.paper_parse import PaperSample, read_paper_jsonl
from layerscope.analysis.interchange.paper_schema import PaperFormatError, printable
from layerscope.analysis.runs.lifecycle import package_version

__all__ = ["PaperImport", "RunNameError", "import_paper_jsonl", "import_run_id"]

IMPORT_BATCH = 256
# Lines with empty values that a PaperImport keeps by number (the rest are counted).
EMPTY_LINES_KEPT = 10
# Different unknown keys a PaperImport keeps by name (a summary shows "..." for more).
UNKNOWN_KEYS_KEPT = 5


class RunNameError(LayerscopeError, ValueError):
    """A name to file the run under that no run may have (empty, or not one printable line)."""


@dataclass(frozen=True)
class PaperImport:
    """What an import stored: the run, the values it had to store as empty, and the entries
    it left out because the format does not know their keys."""

    info: RunInfo
    empty_values: int  # not finite or beyond float32 range, stored as empty (loss: NaN)
    empty_lines: int  # lines with at least one such value
    first_empty_lines: tuple[int, ...]  # the first EMPTY_LINES_KEPT of those lines
    unknown_entries: int = 0  # entries left out, over all lines
    unknown_lines: int = 0  # lines with at least one
    first_unknown_lines: tuple[int, ...] = ()  # the first EMPTY_LINES_KEPT of those lines
    unknown_keys: tuple[str, ...] = ()  # the first UNKNOWN_KEYS_KEPT different keys, printable
    more_unknown_keys: bool = False  # whether there were other keys besides those


def import_run_id(file_sha256: str, model: str, dataset: str, response_type: str, mode: str) -> str:
    """The run key of an imported file: its bytes and the names it is filed under."""
    key = {
        "source": "paper-jsonl",
        "file_sha256": file_sha256,
        "model": model,
        "dataset": dataset,
        "response_type": response_type,
        "mode": mode,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _stored_run(cache: ResultsCache, run_id: str) -> RunInfo | None:
    try:
        return cache.run(run_id)
    except UnknownRunError:
        return None


def import_paper_jsonl(
    cache: ResultsCache,
    path: Path | str,
    *,
    model: str,
    dataset: str,
    response_type: str,
    mode: str = "base",
    progress: Callable[[int, int], None] | None = None,
) -> PaperImport:
    """Read a statistics file into the cache as one run, whole or not at all (see the module
    documentation); importing it again adds nothing.

    Every line is checked before the cache is opened; then the file is read again and stored
    in one transaction, ``progress(done, total)`` called after each batch of IMPORT_BATCH
    samples. Raises :class:`PaperFormatError` (one line, naming ``FILE:LINE``) for a file it
    refuses, leaving the cache untouched.
    """
    for what, name in (("model", model), ("dataset", dataset), ("response type", response_type)):
        problem = name_problem(name)
        if problem is not None:
            raise RunNameError(f"{what}: {problem}")
    path = Path(path)
    if path.is_dir():
        raise PaperFormatError(f"{path}: is a folder, not a statistics file")
    if not path.exists():
        raise PaperFormatError(f"{path}: no such file")
    digest = hashlib.sha256()
    first: PaperSample | None = None
    total = empty_values = empty_lines = 0
    first_empty: list[int] = []
    unknown_entries = unknown_lines = 0
    first_unknown: list[int] = []
    unknown_keys: dict[str, None] = {}
    more_keys = False
    for parsed in read_paper_jsonl(path, digest):
        if first is None:
            first = parsed
        total += 1
        if parsed.emptied:
            empty_values += parsed.emptied
            empty_lines += 1
            if len(first_empty) < EMPTY_LINES_KEPT:
                first_empty.append(parsed.line)
        if parsed.unknown:
            unknown_entries += len(parsed.unknown)
            unknown_lines += 1
            if len(first_unknown) < EMPTY_LINES_KEPT:
                first_unknown.append(parsed.line)
            for key in map(printable, parsed.unknown):
                if key in unknown_keys:
                    continue
                if len(unknown_keys) < UNKNOWN_KEYS_KEPT:
                    unknown_keys[key] = None
                else:
                    more_keys = True
    assert first is not None  # read_paper_jsonl raises for a file without samples
    if total > INTEGER_MAX:
        raise PaperFormatError(f"{path}: {total} samples, more than a run can hold")
    sha256 = digest.hexdigest()
    run_id = import_run_id(sha256, model, dataset, response_type, mode)

    def report(info: RunInfo) -> PaperImport:
        return PaperImport(
            info,
            empty_values,
            empty_lines,
            tuple(first_empty),
            unknown_entries,
            unknown_lines,
            tuple(first_unknown),
            tuple(unknown_keys),
            more_keys,
        )

    stored = _stored_run(cache, run_id)
    if stored is not None and stored.status == "complete" and stored.samples_done >= total:
        return report(stored)
    targets = [
        TargetInfo(layer, projection, name, 0, 0)
        for (layer, projection), name in sorted(
            first.parameters.items(),
            key=lambda item: (item[0][0], PROJECTIONS.index(item[0][1])),
        )
    ]
    spectra = any(m.spectrum is not None for m in first.result.matrices)
    cosines = bool(first.result.layer_cosines or first.result.pair_cosines)

    def batches() -> Iterator[tuple[BatchResult, Mapping[int, Sample]]]:
        again = hashlib.sha256()
        chunk: list[PaperSample] = []
        done = 0
        for parsed in read_paper_jsonl(path, again):
            chunk.append(parsed)
            if len(chunk) >= IMPORT_BATCH:
                yield _batch(chunk)
                done += len(chunk)
                chunk = []
                if progress is not None:
                    progress(done, total)
        if chunk:
            yield _batch(chunk)
            done += len(chunk)
        if again.hexdigest() != sha256 or done != total:
            raise PaperFormatError(f"{path}: the file changed while it was imported")
        if progress is not None:
            progress(done, total)

    header = RunHeader(
        run_id,
        model=model,
        dataset=dataset,
        response_type=response_type,
        mode=mode,
        samples_total=total,
        targets=targets,
        settings={
            "source": "import",
            "format": "paper-jsonl",
            "file": str(path.resolve()),
            "file_sha256": sha256,
            "mode": mode,
            "spectra": spectra,
            "cosines": cosines,
        },
        provenance={
            "layerscope": package_version("layerscope"),
            "imported_from": str(path.resolve()),
        },
    )
    info = cache.store_complete_run(header, batches())
    return report(info)


def _batch(chunk: list[PaperSample]) -> tuple[BatchResult, Mapping[int, Sample]]:
    batch = BatchResult([p.result for p in chunk], [], len(chunk), len(chunk))
    return batch, {p.sample.index: p.sample for p in chunk}
