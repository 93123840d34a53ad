"""Finding and reading the datasets whose gradients layerscope measures.

Why this module exists: the paper's data comes as a folder layout, not as one file per dataset.
A dataset (say GSM8K) has several *response types* for the same questions: the bare answer
(`*_no_cot`), a short rationale (`*_with_cot`), a long one (`*_with_cot_gpt4o`), and for each of
them an *irrelevant* counterpart (same questions, shuffled answers) in a sibling folder named
`<folder>_wrong_answer_shuffle`. Users point layerscope at a file, a folder, a folder of folders or
a small TOML manifest; this module turns any of these into the same sorted list of
`ResponseTypeSource`s, so the engine, the CLI and the UI never have to know about layouts.

Discovery only looks at names (cheap enough for a UI listing); reading parses and validates a
file strictly, because a silently mis-mapped field would produce plausible-looking but wrong
gradient curves. Every error is a `DatasetError` whose message starts with the file and the line
(`FILE:LINE: `) or the record (`FILE: record N: `, 1-based), so a user can go straight to it.

Stdlib only and no torch: the UI lists datasets without loading any model.
"""

from __future__ import annotations

from layerscope.analysis.datasets.bundled import bundled_dataset_path, resolve_dataset
from layerscope.analysis.datasets.discovery import discover_sources
from layerscope.analysis.datasets.reading import (
    count_samples,
    file_sha256,
    read_records,
    read_samples,
)
from layerscope.analysis.datasets.records import numeric_fields
from layerscope.analysis.datasets.sources import (
    BUNDLED_DATASETS,
    DATA_SUFFIXES,
    IRRELEVANT_SUFFIX,
    PAPER_RESPONSE_TYPES,
    SHUFFLE_FOLDER_SUFFIX,
    DatasetError,
    FieldMap,
    Relevance,
    ResponseTypeSource,
    chosen_by,
    type_names,
)

__all__ = [
    "BUNDLED_DATASETS",
    "DATA_SUFFIXES",
    "IRRELEVANT_SUFFIX",
    "PAPER_RESPONSE_TYPES",
    "SHUFFLE_FOLDER_SUFFIX",
    "DatasetError",
    "FieldMap",
    "Relevance",
    "ResponseTypeSource",
    "bundled_dataset_path",
    "chosen_by",
    "count_samples",
    "discover_sources",
    "file_sha256",
    "numeric_fields",
    "read_records",
    "read_samples",
    "resolve_dataset",
    "type_names",
]
