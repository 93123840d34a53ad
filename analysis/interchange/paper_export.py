"""Exporting a run from the cache in the paper's statistics format (JSON lines), for the paper's
scripts or anyone's.

Why a module of its own: the export reads the cache and writes a file, and shares nothing with
the import but the format's keys (:mod:`.paper_schema`), so a change to how files are read and
checked cannot change what an export writes, nor the other way round.

What is written: every sample of the run, keyed by the parameter names its targets were measured
under, with the paper's statistics (``S_list`` where the run stored spectra), the follow-up's
cosines where the run stored them per sample (a cosine that is NaN in the cache, undefined, is
null), and the ``layerscope`` key with the sample's index and token counts, so that an export
imported again gives the identical run. A statistic stored as empty is left out, or written as
null where a line must have it (``S_sum``, ``S_max``); the import reads either as empty again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerscope.analysis.base.outputs import open_output
from layerscope.analysis.base.records import PROJECTIONS
from layerscope.analysis.cache import ResultsCache
from layerscope.analysis.cache.exports import SampleCosines
from layerscope.analysis.interchange.paper_schema import (
    COSINE_KEY,
    FOLLOW_UP_PAIRS,
    METADATA_KEY,
    PAIR_COSINE_KEY,
    PAPER_STATISTICS,
    REQUIRED_STATISTICS,
    SPECTRUM_KEY,
)

__all__ = ["write_paper_jsonl"]


def _paper_entry(values: dict[str, float], spectrum: list[float] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        paper_key: values[name] for paper_key, name in PAPER_STATISTICS.items() if name in values
    }
    for paper_key in REQUIRED_STATISTICS:  # stored as empty: null, which the import reads as empty
        entry.setdefault(paper_key, None)
    if spectrum is not None:
        entry[SPECTRUM_KEY] = spectrum
    return entry


def _json_cosine(value: float) -> float | None:
    return value if math.isfinite(value) else None  # null: undefined (strict JSON has no NaN)


def _cosine_entries(cosines: SampleCosines) -> dict[str, Any]:
    """A sample's own cosines as the follow-up writes them (``cosine_sim``, ``cosine_sim_qkvo``);
    nothing for a run without per-sample cosines."""
    entries: dict[str, Any] = {}
    matrices = cosines.get("layers", {})
    if matrices:
        blocks = {}
        for projection in sorted(matrices, key=PROJECTIONS.index):
            layers, flat = matrices[projection]
            size = len(layers)
            blocks[f"{projection}_proj"] = {
                "layer_indices": layers,
                "matrix": [
                    [_json_cosine(v) for v in flat[i * size : (i + 1) * size]] for i in range(size)
                ],
            }
        entries[COSINE_KEY] = blocks
    pairs = cosines.get("pair", {})
    by_layer: dict[int, dict[str, float | None]] = {}
    for pair, name in FOLLOW_UP_PAIRS.items():
        if pair in pairs:
            layers, values = pairs[pair]
            for layer, value in zip(layers, values, strict=True):
                by_layer.setdefault(layer, {})[name] = _json_cosine(value)
    if by_layer:
        entries[PAIR_COSINE_KEY] = {str(layer): by_layer[layer] for layer in sorted(by_layer)}
    return entries


def write_paper_jsonl(
    cache: ResultsCache,
    run_id: str,
    path: Path | str,
    progress: Callable[[int, int], None] | None = None,
    *,
    force: bool = False,
) -> int:
    """Write a run in the paper's format; returns the number of samples written.

    ``path`` is a file or :data:`~layerscope.analysis.base.outputs.STDOUT`. The cache's own files are
    refused, an existing file is replaced only with ``force``, and a file appears only when
    complete, so a failed export never leaves half a file
    (:func:`~layerscope.analysis.base.outputs.open_output`; its errors are an ``OutputError``).
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
            record.update(_cosine_entries(sample["cosines"]))
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
