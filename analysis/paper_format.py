"""The paper's per-sample statistics files (JSON lines), read and written.

Why: the authors of arXiv 2410.23743 (and its follow-up, arXiv 2504.10766) released their
per-sample gradient statistics as JSON lines, and their plotting scripts read that format. Importing
those files lets a user put the paper's own numbers next to their runs in the same charts and
tables; exporting lets the paper's scripts (or anyone's) read layerscope's numbers.

The format, one JSON object per line and sample::

    {"instruction": ..., "output": ..., "loss": 1.23,
     "model.layers.0.self_attn.q_proj.weight": {"M_mean": ..., "M_max": ..., "M_min": ...,
        "frobenius_norm": ..., "S_sum": ..., "S_max": ..., "S_min": ..., "S_list": [...]}, ...}

keyed by the model's own parameter names. ``S_list`` (all singular values) appears in the
follow-up paper's files and in layerscope's exports of runs computed with ``--spectra``. The
paper's ``instruction`` already contains the input, joined by a newline.

This module is the only place where the paper's short names appear: ``S_sum`` is the nuclear
norm, ``S_max``/``S_min`` the largest/smallest singular value, ``M_*`` the mean/max/min entry.
On import the other statistics are derived where the file allows it, with the engine's
definitions: sigma1_ratio = S_max / S_sum, nuclear_per_loss = S_sum / loss, stable_rank =
frobenius_norm^2 / S_max^2 (the Frobenius norm is the root of the sum of squared singular values,
so this needs no spectrum), and effective_rank (exp of the entropy of S / S_sum) only with
``S_list``; each is NaN where its denominator is zero, as in the engine. Token counts are not in
the paper's files: imported samples have none (NULL), so length control leaves them out.

Exports add one key the paper's scripts ignore, ``"layerscope": {"index", "prompt_tokens",
"response_tokens"}``, so that an export imported again gives the identical run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.datasets import file_sha256
from layerscope.analysis.lifecycle import StoredRun, package_version
from layerscope.analysis.outputs import open_output
from layerscope.analysis.records import (
    PROJECTIONS,
    BatchResult,
    MatrixStatistics,
    RunInfo,
    Sample,
    SampleResult,
    TargetInfo,
)
from layerscope.analysis.targets import ARCHITECTURES

__all__ = [
    "PAPER_STATISTICS",
    "PaperFormatError",
    "PaperSample",
    "import_paper_jsonl",
    "import_run_id",
    "parse_parameter_name",
    "read_paper_jsonl",
    "write_paper_jsonl",
]

# The paper's key -> layerscope's statistic name.
PAPER_STATISTICS = {
    "M_mean": "mean",
    "M_max": "max",
    "M_min": "min",
    "frobenius_norm": "frobenius_norm",
    "S_sum": "nuclear_norm",
    "S_max": "sigma_max",
    "S_min": "sigma_min",
}
SPECTRUM_KEY = "S_list"
METADATA_KEY = "layerscope"
_REQUIRED = ("S_sum", "S_max")
IMPORT_BATCH = 256


class PaperFormatError(ValueError):
    """A malformed statistics file; the message starts with ``FILE:LINE: ``."""


def _projection_paths() -> dict[str, str]:
    """Module path inside a layer -> projection, over every architecture layerscope knows."""
    paths: dict[str, str] = {}
    for spec in ARCHITECTURES.values():
        for projection, path in spec.projections.items():
            paths.setdefault(path, projection)
    return paths


_PATHS = _projection_paths()
_PARAMETER = re.compile(
    r"^(?P<prefix>.*?)\.?(?P<layer>\d+)\.(?P<path>.+)\.weight(?:\[(?P<part>\w+)\])?$"
)
_COMMON = re.compile(r"(?:^|\.)(?P<projection>q|k|v|o|gate|up|down)_proj$")


def parse_parameter_name(name: str) -> tuple[int, str] | None:
    """(layer, projection) of a measured matrix's parameter name, or None for other keys.

    Understands the names of every architecture in :mod:`layerscope.analysis.targets`
    (``model.layers.3.self_attn.q_proj.weight``, ``transformer.h.3.attn.c_proj.weight``), fused
    parts as layerscope names them (``transformer.h.3.attn.c_attn.weight[q]``) and the common
    ``*_proj`` names of other models.
    """
    match = _PARAMETER.match(name)
    if match is None:
        return None
    layer = int(match["layer"])
    part = match["part"]
    if part:
        return (layer, part) if part in PROJECTIONS else None
    path = match["path"]
    if path in _PATHS:
        return layer, _PATHS[path]
    common = _COMMON.search(path)
    return (layer, common["projection"]) if common else None


@dataclass
class PaperSample:
    """One line of a statistics file, in layerscope's terms."""

    line: int
    sample: Sample
    result: SampleResult
    parameters: dict[tuple[int, str], str]  # (layer, projection) -> parameter name


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PaperFormatError(f"{where}: {key} must be a number, got {type(value).__name__}")
    return float(value)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _derived(values: dict[str, float], loss: float, spectrum: list[float] | None) -> None:
    """Add the statistics the paper's numbers determine (the engine's definitions)."""
    nuclear = values["nuclear_norm"]
    sigma_max = values["sigma_max"]
    positive = nuclear > 0
    values["sigma1_ratio"] = sigma_max / nuclear if positive else math.nan
    values["nuclear_per_loss"] = _ratio(nuclear, loss)
    if "frobenius_norm" in values:
        values["stable_rank"] = (
            values["frobenius_norm"] ** 2 / sigma_max**2 if positive and sigma_max else math.nan
        )
    if spectrum is not None:
        total = sum(s for s in spectrum if s > 0)
        if total > 0:
            entropy = -sum((s / total) * math.log(s / total) for s in spectrum if s > 0)
            values["effective_rank"] = math.exp(entropy)
        else:
            values["effective_rank"] = math.nan


def _parse_line(text: str, where: str, index: int, line: int) -> PaperSample:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise PaperFormatError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise PaperFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "loss" not in record:
        raise PaperFormatError(f'{where}: no "loss"')
    loss = _number(record["loss"], where, "loss")
    for key in ("instruction", "output"):
        if not isinstance(record.get(key, ""), str):
            raise PaperFormatError(f"{where}: {key} must be a string")
    raw_metadata = record.get(METADATA_KEY)
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    matrices: list[MatrixStatistics] = []
    parameters: dict[tuple[int, str], str] = {}
    for key, entry in record.items():
        if not isinstance(entry, dict) or key == METADATA_KEY:
            continue
        target = parse_parameter_name(key)
        if target is None:
            continue
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise PaperFormatError(f"{where}: {key} has no {missing[0]}")
        values = {
            name: _number(entry[paper_key], where, f"{key}.{paper_key}")
            for paper_key, name in PAPER_STATISTICS.items()
            if paper_key in entry
        }
        spectrum = None
        if SPECTRUM_KEY in entry:
            raw = entry[SPECTRUM_KEY]
            if not isinstance(raw, list):
                raise PaperFormatError(f"{where}: {key}.{SPECTRUM_KEY} must be a list")
            spectrum = [_number(v, where, f"{key}.{SPECTRUM_KEY}") for v in raw]
        _derived(values, loss, spectrum)
        if target in parameters:
            raise PaperFormatError(
                f"{where}: {key} and {parameters[target]} are both layer {target[0]} {target[1]}"
            )
        parameters[target] = key
        matrices.append(MatrixStatistics(target[0], target[1], values, spectrum))
    if not matrices:
        raise PaperFormatError(
            f"{where}: no gradient statistics (objects keyed by parameter names such as "
            "model.layers.0.self_attn.q_proj.weight)"
        )
    matrices.sort(key=lambda m: (m.layer, PROJECTIONS.index(m.projection)))
    sample_index = metadata.get("index", index)
    if not isinstance(sample_index, int) or sample_index < 0:
        raise PaperFormatError(f"{where}: {METADATA_KEY}.index must be a non-negative integer")
    sample = Sample(sample_index, record.get("instruction", ""), record.get("output", ""))
    result = SampleResult(
        index=sample_index,
        loss=loss,
        prompt_tokens=int(metadata.get("prompt_tokens", -1)),
        response_tokens=int(metadata.get("response_tokens", -1)),
        matrices=matrices,
    )
    return PaperSample(line, sample, result, parameters)


def read_paper_jsonl(path: Path | str) -> Iterator[PaperSample]:
    """Parse a statistics file line by line; every error names the file and line.

    All lines must measure the same matrices as the first one.
    """
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed below; errors re-raised)
    except OSError as error:
        raise PaperFormatError(f"{path}: {error.strerror or error}") from None
    expected: set[tuple[int, str]] | None = None
    seen: set[int] = set()
    index = 0
    with handle:
        try:
            for line_number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                where = f"{path}:{line_number}"
                parsed = _parse_line(text, where, index, line_number)
                index += 1
                targets = set(parsed.parameters)
                if expected is None:
                    expected = targets
                elif targets != expected:
                    raise PaperFormatError(
                        f"{where}: measures {len(targets)} matrices, the first line "
                        f"{len(expected)}; every line must have the same parameters"
                    )
                if parsed.sample.index in seen:
                    raise PaperFormatError(f"{where}: sample index {parsed.sample.index} repeats")
                seen.add(parsed.sample.index)
                yield parsed
        except UnicodeDecodeError as error:
            raise PaperFormatError(f"{path}: not UTF-8 text ({error.reason})") from None
    if expected is None:
        raise PaperFormatError(f"{path}: no samples (the file is empty)")


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


def import_paper_jsonl(
    cache: ResultsCache,
    path: Path | str,
    *,
    model: str,
    dataset: str,
    response_type: str,
    mode: str = "base",
    progress: Callable[[int, int], None] | None = None,
) -> RunInfo:
    """Read a statistics file into the cache as a run (importing it again adds nothing).

    The file is read twice, streaming: first to validate every line, so a malformed line leaves
    the cache untouched, then to store it in batches; memory stays bounded even for files with
    full spectra. ``progress(done, total)`` is called after each stored batch.
    """
    path = Path(path)
    if not path.is_file():
        raise PaperFormatError(f"{path}: no such file")
    first: PaperSample | None = None
    total = 0
    for parsed in read_paper_jsonl(path):
        if first is None:
            first = parsed
        total += 1
    assert first is not None  # read_paper_jsonl raises for a file without samples
    targets = [
        TargetInfo(layer, projection, name, 0, 0)
        for (layer, projection), name in sorted(
            first.parameters.items(),
            key=lambda item: (item[0][0], PROJECTIONS.index(item[0][1])),
        )
    ]
    digest = file_sha256(path)
    run_id = import_run_id(digest, model, dataset, response_type, mode)
    spectra = any(m.spectrum is not None for m in first.result.matrices)
    stored_run = StoredRun(
        cache,
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
            "file_sha256": digest,
            "mode": mode,
            "spectra": spectra,
        },
        provenance={
            "layerscope": package_version("layerscope"),
            "imported_from": str(path.resolve()),
        },
    )
    with stored_run:
        done = stored_run.done_indices()
        handled = len(done)
        chunk: list[PaperSample] = []

        def store() -> None:
            nonlocal handled
            batch = BatchResult([p.result for p in chunk], [], len(chunk), len(chunk))
            stored_run.write(batch, {p.sample.index: p.sample for p in chunk})
            handled += len(chunk)
            chunk.clear()
            if progress is not None:
                progress(handled, total)

        for parsed in read_paper_jsonl(path):
            if parsed.sample.index in done:
                continue
            chunk.append(parsed)
            if len(chunk) >= IMPORT_BATCH:
                store()
        if chunk:
            store()
    assert stored_run.info is not None
    return stored_run.info


def _paper_entry(values: dict[str, float], spectrum: list[float] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        paper_key: values[name] for paper_key, name in PAPER_STATISTICS.items() if name in values
    }
    if spectrum is not None:
        entry[SPECTRUM_KEY] = spectrum
    return entry


def write_paper_jsonl(
    cache: ResultsCache,
    run_id: str,
    path: Path | str,
    progress: Callable[[int, int], None] | None = None,
    *,
    force: bool = False,
) -> int:
    """Write a run in the paper's format; returns the number of samples written.

    ``path`` is a file or :data:`~layerscope.analysis.outputs.STDOUT`. The cache's own files are
    refused, an existing file is replaced only with ``force``, and a file appears only when
    complete, so a failed export never leaves half a file
    (:func:`~layerscope.analysis.outputs.open_output`; its errors are an ``OutputError``).
    """
    info = cache.run(run_id)
    names = {(t.layer, t.projection): t.parameter for t in cache.targets(info.id)}
    written = 0
    with open_output(path, cache.files, force=force) as handle:
        for sample, matrices in cache.iter_sample_statistics(info.id):
            instruction = sample["instruction"]
            if sample["input"]:
                instruction = f"{instruction}\n{sample['input']}"
            record: dict[str, Any] = {
                "instruction": instruction,
                "output": sample["output"],
                "loss": sample["loss"],
            }
            for layer, projection, values, spectrum in matrices:
                name = names.get((layer, projection), f"layers.{layer}.{projection}_proj.weight")
                record[name] = _paper_entry(values, spectrum)
            metadata: dict[str, int] = {"index": sample["index"]}
            if sample["prompt_tokens"] >= 0 and sample["response_tokens"] >= 0:
                metadata["prompt_tokens"] = sample["prompt_tokens"]
                metadata["response_tokens"] = sample["response_tokens"]
            record[METADATA_KEY] = metadata
            handle.write(json.dumps(record).encode() + b"\n")  # ASCII: ensure_ascii
            written += 1
            if progress is not None and written % 100 == 0:
                progress(written, info.samples_done)
    if progress is not None:
        progress(written, info.samples_done)
    return written
