"""Deterministic generator of the bundled sample datasets (and of more text like them).

Why this exists: layerscope must be demonstrable and testable without downloading anything, and
the paper's data may not be redistributed. So the project writes its own small datasets in the
paper's folder layout: math word problems answered three ways (bare answer = fast thinking,
short rationale and long step-by-step rationale = slow thinking) and invented-knowledge topics
answered briefly or at length, each with an "irrelevant" counterpart whose responses belong to
other questions. Everything is drawn from a seeded `random.Random` with the standard library
only, so `python samples/generate_datasets.py` rewrites the committed files byte for byte.

The same generators, called with other seeds (`math_problems`, `knowledge_topics`), produce the
training text of the bundled tiny model, which therefore never sees the bundled samples.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from layerscope.samples.knowledge_text import (
    KNOWLEDGE_RESPONSE_TYPES,
    KnowledgeTopic,
    knowledge_topics,
)
from layerscope.samples.math_text import MATH_RESPONSE_TYPES, MathProblem, MathStep, math_problems

__all__ = [
    "KNOWLEDGE_RESPONSE_TYPES",
    "MATH_RESPONSE_TYPES",
    "KnowledgeTopic",
    "MathProblem",
    "MathStep",
    "bundled_datasets",
    "correct_records",
    "dataset_text",
    "derangement",
    "irrelevant_records",
    "knowledge_topics",
    "math_problems",
    "write_bundled_datasets",
]

MATH_SEED = 20241031
KNOWLEDGE_SEED = 20241101
MATH_COUNT = 40
KNOWLEDGE_COUNT = 24


# Paper file names per response type (see analysis/datasets.py for the reverse mapping).
MATH_FILES = {
    "none_cot": "math_no_cot.json",
    "simplified_cot": "math_with_cot.json",
    "detailed_cot": "math_with_cot_gpt4o.json",
}
KNOWLEDGE_FILES = {"short": "knowledge_short.json", "long": "knowledge_long.json"}
SHUFFLED_SUFFIX = "_wrong_answer_shuffle"

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "datasets"


# --------------------------------------------------------------------------------------------
# Records and files
# --------------------------------------------------------------------------------------------

Record = dict[str, str]


def derangement(keys: Sequence[str], rng: random.Random) -> list[int]:
    """A random permutation `order` with keys[order[i]] != keys[i] for every i.

    With distinct keys this is a plain derangement (no item keeps its place). Equal keys count
    as the same item, so two problems whose bare answers are both "The answer is 8." never swap:
    an irrelevant response must differ from the correct one, not merely come from elsewhere.
    """
    if len(set(keys)) < 2:
        raise ValueError("a derangement needs at least 2 distinct items")
    for _ in range(100_000):
        order = list(range(len(keys)))
        rng.shuffle(order)
        if all(keys[index] != keys[source] for index, source in enumerate(order)):
            return order
    raise ValueError("no derangement found: one item repeats in more than half of the places")


def _record(instruction: str, output: str) -> Record:
    return {"instruction": instruction, "input": "", "output": output}


def correct_records(
    items: Sequence[MathProblem] | Sequence[KnowledgeTopic], response_type: str
) -> list[Record]:
    """Each item's instruction with its own correct response of `response_type`."""
    records = []
    for item in items:
        instruction = item.question if isinstance(item, MathProblem) else item.instruction
        records.append(_record(instruction, item.response(response_type)))
    return records


def irrelevant_records(records: Sequence[Record], seed: int) -> list[Record]:
    """The same instructions, in the same order, each paired with another record's output.

    No output stays with its own instruction, nor moves to one whose correct output is equal.
    """
    order = derangement([record["output"] for record in records], random.Random(seed))
    return [_record(record["instruction"], records[source]["output"]) for record, source in
            zip(records, order, strict=True)]  # fmt: skip


def bundled_datasets() -> dict[str, list[Record]]:
    """Every bundled file's records, keyed by its path relative to the datasets folder."""
    files: dict[str, list[Record]] = {}
    groups: list[tuple[str, Sequence[MathProblem] | Sequence[KnowledgeTopic], dict[str, str], int]] = [
        ("math", math_problems(MATH_SEED, MATH_COUNT), MATH_FILES, MATH_SEED),
        ("knowledge", knowledge_topics(KNOWLEDGE_SEED, KNOWLEDGE_COUNT), KNOWLEDGE_FILES, KNOWLEDGE_SEED),
    ]  # fmt: skip
    for folder, items, file_names, seed in groups:
        for offset, (response_type, file_name) in enumerate(file_names.items(), start=1):
            correct = correct_records(items, response_type)
            files[f"{folder}/{file_name}"] = correct
            files[f"{folder}{SHUFFLED_SUFFIX}/{file_name}"] = irrelevant_records(
                correct, seed + offset
            )
    return files


def dataset_text(records: Sequence[Record]) -> str:
    """The exact file content: a JSON array, indent 1, UTF-8 characters kept, final newline."""
    return json.dumps(list(records), indent=1, ensure_ascii=False) + "\n"


def write_bundled_datasets(root: Path = DEFAULT_OUTPUT) -> list[Path]:
    """Write every bundled dataset file under `root`; returns the paths written."""
    written = []
    for relative, records in bundled_datasets().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(dataset_text(records))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="datasets folder to (re)write"
    )
    args = parser.parse_args(argv)
    for path in write_bundled_datasets(args.output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
