"""The records and names of the dataset layer: response-type sources, field maps, errors.

Why apart: discovery, manifests and reading all speak of the same `ResponseTypeSource` and raise
the same `DatasetError` (whose message starts with the file and the line or record, so a user
can go straight to it); the paper's naming (`*_no_cot`, `_wrong_answer_shuffle`) is fixed here
once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from layerscope.analysis.base.errors import LayerscopeError

Relevance = Literal["correct", "irrelevant"]

BUNDLED_DATASETS = ("math", "knowledge")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow")
# What a data source can be, for messages.
DATA_KINDS = ".json, .jsonl, .parquet, .arrow or a save_to_disk folder"
MANIFEST_SUFFIX = ".toml"
SHUFFLE_FOLDER_SUFFIX = "_wrong_answer_shuffle"
IRRELEVANT_SUFFIX = "_irrelevant"

# File-name suffix in the paper's data -> response type. Longest first: "_with_cot_gpt4o" also
# ends like nothing else, but "_with_cot" must not swallow it.
PAPER_RESPONSE_TYPES = (
    ("_with_cot_gpt4o", "detailed_cot"),
    ("_with_cot", "simplified_cot"),
    ("_no_cot", "none_cot"),
)
# Fast thinking first, then slower and slower; other response types after them.
TYPE_ORDER = {"none_cot": 0, "simplified_cot": 1, "detailed_cot": 2}
# How deep a folder of folders is searched for dataset folders (a user pointing at their home
# folder must get an error, not a minute-long walk).
MAX_FOLDER_DEPTH = 3
SKIPPED_FOLDERS = {"__pycache__"}


class DatasetError(LayerscopeError, ValueError):
    """A dataset that cannot be found or read; the message names the file and line or record."""

    def __init__(
        self,
        where: str | Path,
        message: str,
        *,
        line: int | None = None,
        record: int | None = None,
    ) -> None:
        self.where = str(where)
        self.line = line
        self.record = record
        self.reason = message
        if record is not None:
            text = f"{where}: record {record}: {message}"
            if line is not None:
                text += f" (line {line})"
        elif line is not None:
            text = f"{where}:{line}: {message}"
        else:
            text = f"{where}: {message}"
        super().__init__(text)


@dataclass(frozen=True)
class FieldMap:
    """Which keys of a record hold the instruction, the optional input and the response."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"

    def __post_init__(self) -> None:
        for role in ("instruction", "input", "output"):
            value = getattr(self, role)
            if not isinstance(value, str) or not value:
                raise ValueError(f"field map: the {role} field name must be a non-empty string")
        if len({self.instruction, self.input, self.output}) != 3:
            raise ValueError(f"field map: field names must differ ({self.describe()})")

    def describe(self) -> str:
        """The map as a user wrote it, for error messages."""
        return f"instruction={self.instruction!r}, input={self.input!r}, output={self.output!r}"


@dataclass(frozen=True)
class ResponseTypeSource:
    """One file of responses of one type (e.g. gsm8k_train / detailed_cot, irrelevant)."""

    dataset: str
    response_type: str
    path: Path
    relevance: Relevance
    fields: FieldMap = FieldMap()

    @property
    def base_type(self) -> str:
        """The response type without the `_irrelevant` suffix: pairs correct and irrelevant."""
        return _base_type(self.response_type)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.response_type}"


def type_names(sources: Sequence[ResponseTypeSource]) -> list[str]:
    """How each source is chosen (``--types``, the explorer's type list): its response type, or
    ``dataset/type`` where the sources come from several datasets (the paper's ``cot_500``
    folder holds gsm8k and creak, each with a ``none_cot``), so every name picks one source."""
    qualified = len({source.dataset for source in sources}) > 1
    return [source.label if qualified else source.response_type for source in sources]


def chosen_by(source: ResponseTypeSource, names: Collection[str]) -> bool:
    """Whether ``names`` choose ``source``: by ``dataset/type``, or by its type alone (every
    dataset's source of that type)."""
    return source.response_type in names or source.label in names


def _base_type(response_type: str) -> str:
    if response_type.endswith(IRRELEVANT_SUFFIX) and response_type != IRRELEVANT_SUFFIX:
        return response_type[: -len(IRRELEVANT_SUFFIX)]
    return response_type
