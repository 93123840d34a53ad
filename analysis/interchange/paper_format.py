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

The follow-up (arXiv 2504.10766, code MingLiiii/Gradient_Unified) writes ``S_list`` *instead of*
``S_sum``/``S_max``/``S_min`` (they are then its sum, largest and smallest value) and adds each
sample's gradient cosines::

    "cosine_sim": {"q_proj": {"layer_indices": [0, 1, ...], "matrix": [[1.0, 0.93, ...], ...]},
                   "k_proj": ..., "v_proj": ..., "o_proj": ...},
    "cosine_sim_qkvo": {"0": {"q_proj_x_o_proj": 0.12, "k_proj_x_v_proj": 0.31}, "1": ...}

``matrix[i][j]`` is the cosine between the gradients of layers ``layer_indices[i]`` and
``[j]`` of one projection (its scripts plot the adjacent ``matrix[i][i+1]``); the second holds,
per layer, the cosines between the q and o and between the k and v gradients. Both are stored per
sample (``sample_cosines``, schema version 4) and summed per run (``cosine_sums``, the Cosines
tab), and written back by the export; a cosine that is null (undefined: a zero gradient) is NaN in
the cache and null again in an export. Runs stored before version 4 export without them.

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

Why the import is strict, and what it does with each value: a file is checked line by line
against what the cache's columns can hold (:mod:`layerscope.analysis.cache.schema`) *before* the
cache is opened, so that DuckDB never meets a value it refuses halfway through a file, and every
complaint names ``FILE:LINE``:

* the file is read as bytes and each line decoded on its own, so invalid UTF-8 names its line;
  a UTF-8 byte order mark on the first line is allowed. Lines that are only whitespace are
  skipped. JSON that Python's parser refuses for other reasons than syntax (an integer of more
  than 4300 digits, arrays nested thousands deep) is "not valid JSON" with the line too;
* statistics (REAL, float32) and singular values: a value that is not finite (``NaN``,
  ``Infinity``, ``1e400``, which JSON reads as infinity) or beyond float32's range (``1e39``, an
  integer of 400 digits) is **stored as empty** (NULL), not refused: one broken matrix should not
  cost the other numbers of a file, and an empty value is what a reader of the cache sees
  anyway. :class:`PaperImport` counts them and the lines they are on, and ``layerscope import``
  reports them. An empty value is left out of its layer's mean only (a NaN the engine computes
  drops the sample from its projection's whole curve, the paper's rule); a derived statistic
  whose input is empty is empty too, and one whose result is beyond float32 is stored as empty
  and counted. JSON ``null`` is an empty value that was already empty (exports write it): stored
  as empty, not counted;
* ``loss`` (DOUBLE) must be a number; one that is not finite is stored as **NaN**, and counted
  with the empty values: the engine stores a NaN loss the same way, every aggregate leaves it
  out as not finite, and so an export of a computed run with such a sample imports again as the
  same run. Refusing the whole file for it would lose every other sample (the import is all or
  nothing), and NULL would hide it from the counts of non-finite losses;
* integers must fit their INTEGER/SMALLINT columns or the line is refused, naming the key:
  ``layerscope.index`` (0 to 2^31 - 1), ``layerscope.prompt_tokens``/``response_tokens`` (the
  same, or absent), and the layer number in a parameter name (at most 32767). Texts
  (instruction, output, parameter names) must be encodable as UTF-8 (JSON can spell a lone
  surrogate, ``"\\ud800"``, which no text column holds).

Why the import is one transaction (:meth:`ResultsCache.store_complete_run`): an imported file is
one run or nothing. A failure of any kind on line 290 (a malformed line, a value DuckDB still
refuses, Ctrl-C, a killed process) leaves no run and the cache as it was; importing the same file
again adds nothing, and a run an older layerscope left half-imported (batch by batch) is
completed. The file is read twice, streaming: first to check every line (and hash the bytes for
the run key), then, inside the transaction, to store it, so memory stays bounded even for files
with full spectra; a file that changes between the two readings is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.outputs import open_output
from layerscope.analysis.base.records import (
    PROJECTIONS,
    BatchResult,
    MatrixStatistics,
    RunHeader,
    RunInfo,
    Sample,
    SampleResult,
    TargetInfo,
)
from layerscope.analysis.cache import ResultsCache, UnknownRunError
from layerscope.analysis.cache.exports import SampleCosines
from layerscope.analysis.cache.schema import INTEGER_MAX, REAL_LIMIT, SMALLINT_MAX
from layerscope.analysis.models.targets import ARCHITECTURES
from layerscope.analysis.runs.lifecycle import package_version

__all__ = [
    "PAPER_STATISTICS",
    "PaperFormatError",
    "PaperImport",
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
# The follow-up's per-line cosines: layer-by-layer matrices per projection, q-o / k-v per layer.
COSINE_KEY = "cosine_sim"
PAIR_COSINE_KEY = "cosine_sim_qkvo"
_FOLLOW_UP_PROJECTIONS = {f"{p}_proj": p for p in PROJECTIONS}
FOLLOW_UP_PAIRS = {"q-o": "q_proj_x_o_proj", "k-v": "k_proj_x_v_proj"}
_FOLLOW_UP_PAIR_NAMES = {name: pair for pair, name in FOLLOW_UP_PAIRS.items()}
METADATA_KEY = "layerscope"
_REQUIRED = ("S_sum", "S_max")
IMPORT_BATCH = 256
# Lines with empty values that a PaperImport keeps by number (the rest are counted).
EMPTY_LINES_KEPT = 10
# Longer keys are never parameter names (the longest real ones have about 60 characters); the
# limit also keeps the name pattern's backtracking cheap on garbage.
_MAX_PARAMETER_NAME = 256
_JSON_WHITESPACE = " \t\r\n"


class PaperFormatError(LayerscopeError, ValueError):
    """A malformed statistics file; the message is one line and starts with ``FILE:LINE: ``
    (``FILE: `` for what concerns the whole file)."""


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
# A layer number with more digits than this is beyond any column (and int() of thousands of
# digits is slow or refused): it is returned as this, which no check lets through.
_LAYER_DIGITS = 18
_HUGE_LAYER = 10**_LAYER_DIGITS


def parse_parameter_name(name: str) -> tuple[int, str] | None:
    """(layer, projection) of a measured matrix's parameter name, or None for other keys.

    Understands the names of every architecture in :mod:`layerscope.analysis.models.targets`
    (``model.layers.3.self_attn.q_proj.weight``, ``transformer.h.3.attn.c_proj.weight``), fused
    parts as layerscope names them (``transformer.h.3.attn.c_attn.weight[q]``) and the common
    ``*_proj`` names of other models. Names of more than 256 characters are not parameter
    names; a layer number of more than 18 digits comes back as 10**18 (which the import refuses
    as beyond the cache's layer column).
    """
    if len(name) > _MAX_PARAMETER_NAME:
        return None
    match = _PARAMETER.match(name)
    if match is None:
        return None
    digits = match["layer"].lstrip("0") or "0"
    layer = int(digits) if len(digits) <= _LAYER_DIGITS else _HUGE_LAYER
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
    emptied: int = 0  # values of this line stored as empty (not finite or beyond float32)


@dataclass(frozen=True)
class PaperImport:
    """What an import stored: the run, and the values it had to store as empty."""

    info: RunInfo
    empty_values: int  # not finite or beyond float32 range, stored as empty (loss: NaN)
    empty_lines: int  # lines with at least one such value
    first_empty_lines: tuple[int, ...]  # the first EMPTY_LINES_KEPT of those lines


def _shown(text: str, limit: int = 60) -> str:
    """A key or text from the file as one printable line (control characters and lone
    surrogates escaped), shortened."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    escaped = escaped.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def _kind(value: Any) -> str:
    """What a JSON value is, for a message (its value where short)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        digits = len(str(abs(value)))
        return str(value) if digits <= 30 else f"an integer of {digits} digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return f'a string "{_shown(value, 30)}"'
    if isinstance(value, list):
        return "a list"
    return "an object"


def _number(value: Any, where: str, key: str) -> float:
    """A JSON number as a float: infinity for integers beyond a double's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PaperFormatError(f"{where}: {key} must be a number, got {_kind(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer of more than 308 digits
        return math.inf if value > 0 else -math.inf


def _fits_real(value: float) -> bool:
    """Whether a REAL (float32) column stores this as the number it is (NaN: False)."""
    return abs(value) < REAL_LIMIT


class _LineValues:
    """Checks one line's values against the cache's columns and counts the emptied ones."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.emptied = 0

    def statistic(self, value: Any, key: str, part: str) -> float | None:
        """A REAL value from the file (``key``'s ``part``): None (stored as empty) where
        float32 cannot hold it."""
        if type(value) is float and -REAL_LIMIT < value < REAL_LIMIT:  # most values, quickly
            return value
        if value is None:
            return None  # already empty (what an export writes for an empty value)
        number = _number(value, self.where, f"{_shown(key)}.{part}")
        if _fits_real(number):
            return number
        self.emptied += 1
        return None

    def derived(self, value: float) -> float | None:
        """A derived REAL: NaN stays NaN (an undefined ratio, as in the engine); a result
        beyond float32 is stored as empty."""
        if math.isnan(value) or _fits_real(value):
            return value
        self.emptied += 1
        return None

    def loss(self, value: Any) -> float:
        number = _number(value, self.where, "loss")
        if math.isfinite(number):
            return number
        self.emptied += 1
        return math.nan

    def integer(self, value: Any, key: str, *, optional: bool = False) -> int | None:
        """An INTEGER column's value: 0 to INTEGER_MAX (or absent/null when optional)."""
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INTEGER_MAX:
            return value
        absent = " (or absent)" if optional else ""
        raise PaperFormatError(
            f"{self.where}: {key} must be an integer from 0 to {INTEGER_MAX}{absent}, "
            f"got {_kind(value)}"
        )

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise PaperFormatError(f"{self.where}: {key} must be a string, got {_kind(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            bad = value[error.start]
            raise PaperFormatError(
                f"{self.where}: {_shown(key)} is not text a cache can hold "
                f"(a lone surrogate \\u{ord(bad):04x} at character {error.start + 1})"
            ) from None
        return value


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _derived(
    values: dict[str, float],
    loss: float,
    spectrum: list[float | None] | None,
    check: _LineValues,
) -> None:
    """Add the statistics the paper's numbers determine (the engine's definitions); a
    statistic whose inputs are empty is left out (stored as empty)."""
    derived: dict[str, float] = {}
    nuclear = values.get("nuclear_norm")
    sigma_max = values.get("sigma_max")
    frobenius = values.get("frobenius_norm")
    if nuclear is not None:
        derived["nuclear_per_loss"] = _ratio(nuclear, loss)
        if sigma_max is not None:
            positive = nuclear > 0
            derived["sigma1_ratio"] = sigma_max / nuclear if positive else math.nan
            if frobenius is not None:
                square = sigma_max * sigma_max
                derived["stable_rank"] = (
                    frobenius * frobenius / square if positive and square else math.nan
                )
    if spectrum is not None and all(s is not None for s in spectrum):
        present = [s for s in spectrum if s is not None and s > 0]
        total = sum(present)
        if total > 0:
            entropy = -sum((s / total) * math.log(s / total) for s in present if s / total > 0)
            derived["effective_rank"] = math.exp(entropy)
        else:
            derived["effective_rank"] = math.nan
    for name, value in derived.items():
        kept = check.derived(value)
        if kept is not None:
            values[name] = kept


def _from_spectrum(
    entry: dict[str, Any],
    values: dict[str, float],
    spectrum: list[float | None],
    check: _LineValues,
) -> None:
    """The nuclear norm and the largest and smallest singular values from the full spectrum,
    for the keys the line does not give (the follow-up's files carry only ``S_list``); empty
    where the spectrum has an empty value or no value at all."""
    if not spectrum or any(v is None for v in spectrum):
        return
    known = [v for v in spectrum if v is not None]
    for paper_key, value in (
        ("S_sum", math.fsum(known)),
        ("S_max", max(known)),
        ("S_min", min(known)),
    ):
        if paper_key not in entry:
            kept = check.derived(value)
            if kept is not None:
                values[PAPER_STATISTICS[paper_key]] = kept


def _cosine(value: Any, where: str, key: str, check: _LineValues) -> float:
    """One cosine from the file: NaN for null (undefined: a zero gradient) and, counted as an
    emptied value, for one that is not finite or beyond float32."""
    if value is None:
        return math.nan
    number = _number(value, where, key)
    if _fits_real(number):
        return number
    check.emptied += 1
    return math.nan


def _layer_number(value: Any, where: str, key: str) -> int:
    if isinstance(value, str) and value.isdecimal() and len(value) <= _LAYER_DIGITS:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SMALLINT_MAX:
        return value
    raise PaperFormatError(
        f"{where}: {key} must be a layer number from 0 to {SMALLINT_MAX}, got {_kind(value)}"
    )


def _layer_cosines(raw: Any, result: SampleResult, check: _LineValues) -> None:
    """``cosine_sim``: per projection, the layer-by-layer matrix between ``layer_indices``."""
    where = check.where
    if not isinstance(raw, dict):
        raise PaperFormatError(f"{where}: {COSINE_KEY} must be an object, got {_kind(raw)}")
    for name, block in raw.items():
        key = f"{COSINE_KEY}.{_shown(name)}"
        projection = _FOLLOW_UP_PROJECTIONS.get(name)
        if projection is None:
            raise PaperFormatError(
                f"{where}: {key} is not a projection (q_proj, k_proj, v_proj, o_proj, gate_proj, "
                "up_proj, down_proj)"
            )
        if not isinstance(block, dict) or "layer_indices" not in block or "matrix" not in block:
            raise PaperFormatError(
                f"{where}: {key} must be an object with layer_indices and matrix, "
                f"got {_kind(block)}"
            )
        indices, matrix = block["layer_indices"], block["matrix"]
        if not isinstance(indices, list):
            raise PaperFormatError(
                f"{where}: {key}.layer_indices must be a list, got {_kind(indices)}"
            )
        layers = [_layer_number(v, where, f"{key}.layer_indices") for v in indices]
        size = len(layers)
        if len(set(layers)) != size:
            raise PaperFormatError(f"{where}: {key}.layer_indices repeats a layer")
        if (
            not isinstance(matrix, list)
            or len(matrix) != size
            or not all(isinstance(row, list) and len(row) == size for row in matrix)
        ):
            raise PaperFormatError(
                f"{where}: {key}.matrix must be {size} lists of {size} numbers "
                "(one per layer of layer_indices)"
            )
        result.layer_cosines[projection] = [
            [_cosine(v, where, f"{key}.matrix", check) for v in row] for row in matrix
        ]
        result.cosine_layers[projection] = layers


def _pair_cosines(raw: Any, result: SampleResult, check: _LineValues) -> None:
    """``cosine_sim_qkvo``: per layer (a decimal string), the q-o and k-v cosines."""
    where = check.where
    if not isinstance(raw, dict):
        raise PaperFormatError(f"{where}: {PAIR_COSINE_KEY} must be an object, got {_kind(raw)}")
    found: dict[str, list[tuple[int, float]]] = {}
    for layer_key, entry in raw.items():
        key = f"{PAIR_COSINE_KEY}.{_shown(layer_key)}"
        layer = _layer_number(layer_key, where, f"{PAIR_COSINE_KEY} key")
        if not isinstance(entry, dict):
            raise PaperFormatError(f"{where}: {key} must be an object, got {_kind(entry)}")
        for name, value in entry.items():
            pair = _FOLLOW_UP_PAIR_NAMES.get(name)
            if pair is None:
                raise PaperFormatError(
                    f"{where}: {key}.{_shown(name)} is not q_proj_x_o_proj or k_proj_x_v_proj"
                )
            found.setdefault(pair, []).append(
                (layer, _cosine(value, where, f"{key}.{name}", check))
            )
    for pair, cosines in found.items():
        cosines.sort()
        result.pair_cosines[pair] = [value for _layer, value in cosines]
        result.cosine_layers[pair] = [layer for layer, _value in cosines]


def _decode_json(text: str, where: str) -> Any:
    try:
        # without its line break, so that the column counts within the line
        return json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as error:
        raise PaperFormatError(
            f"{where}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except RecursionError:
        raise PaperFormatError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as error:  # Python's limit on the digits of an integer literal
        reason = "an integer literal too long" if "digits" in str(error) else str(error)
        raise PaperFormatError(f"{where}: not valid JSON ({reason})") from None


def _matrix(
    key: str, entry: dict[str, Any], target: tuple[int, str], loss: float, check: _LineValues
) -> MatrixStatistics:
    where = check.where
    missing = [k for k in _REQUIRED if k not in entry]
    if missing and SPECTRUM_KEY not in entry:
        raise PaperFormatError(f"{where}: {_shown(key)} has no {missing[0]} (nor {SPECTRUM_KEY})")
    values: dict[str, float] = {}
    for paper_key, name in PAPER_STATISTICS.items():
        if paper_key in entry:
            value = check.statistic(entry[paper_key], key, paper_key)
            if value is not None:
                values[name] = value
    spectrum: list[float | None] | None = None
    if SPECTRUM_KEY in entry:
        raw = entry[SPECTRUM_KEY]
        if not isinstance(raw, list):
            raise PaperFormatError(
                f"{where}: {_shown(key)}.{SPECTRUM_KEY} must be a list, got {_kind(raw)}"
            )
        spectrum = [check.statistic(v, key, SPECTRUM_KEY) for v in raw]
        _from_spectrum(entry, values, spectrum, check)
    _derived(values, loss, spectrum, check)
    return MatrixStatistics(target[0], target[1], values, spectrum)


def _parse_line(text: str, where: str, index: int, line: int) -> PaperSample:
    record = _decode_json(text, where)
    if not isinstance(record, dict):
        raise PaperFormatError(f"{where}: expected a JSON object, got {_kind(record)}")
    check = _LineValues(where)
    if "loss" not in record:
        raise PaperFormatError(f'{where}: no "loss"')
    loss = check.loss(record["loss"])
    instruction = check.text(record.get("instruction", ""), "instruction")
    output = check.text(record.get("output", ""), "output")
    metadata = record.get(METADATA_KEY, {})
    if not isinstance(metadata, dict):
        raise PaperFormatError(f"{where}: {METADATA_KEY} must be an object, got {_kind(metadata)}")
    matrices: list[MatrixStatistics] = []
    parameters: dict[tuple[int, str], str] = {}
    for key, entry in record.items():
        if key == METADATA_KEY:
            continue
        target = parse_parameter_name(key)
        if target is None:
            continue
        if not isinstance(entry, dict):
            raise PaperFormatError(
                f"{where}: {_shown(key)} must be an object of statistics, got {_kind(entry)}"
            )
        check.text(key, key)  # stored as the target's parameter name
        if target[0] > SMALLINT_MAX:
            raise PaperFormatError(
                f"{where}: {_shown(key)}: its layer number does not fit the cache "
                f"(at most {SMALLINT_MAX})"
            )
        if target in parameters:
            raise PaperFormatError(
                f"{where}: {_shown(key)} and {_shown(parameters[target])} are both layer "
                f"{target[0]} {target[1]}"
            )
        matrices.append(_matrix(key, entry, target, loss, check))
        parameters[target] = key
    if not matrices:
        raise PaperFormatError(
            f"{where}: no gradient statistics (objects keyed by parameter names such as "
            "model.layers.0.self_attn.q_proj.weight)"
        )
    matrices.sort(key=lambda m: (m.layer, PROJECTIONS.index(m.projection)))
    sample_index = check.integer(metadata.get("index", index), f"{METADATA_KEY}.index")
    assert sample_index is not None
    prompt_tokens = check.integer(
        metadata.get("prompt_tokens"), f"{METADATA_KEY}.prompt_tokens", optional=True
    )
    response_tokens = check.integer(
        metadata.get("response_tokens"), f"{METADATA_KEY}.response_tokens", optional=True
    )
    sample = Sample(sample_index, instruction, output)
    result = SampleResult(
        index=sample_index,
        loss=loss,
        prompt_tokens=-1 if prompt_tokens is None else prompt_tokens,
        response_tokens=-1 if response_tokens is None else response_tokens,
        matrices=matrices,
    )
    if COSINE_KEY in record:
        _layer_cosines(record[COSINE_KEY], result, check)
    if PAIR_COSINE_KEY in record:
        _pair_cosines(record[PAIR_COSINE_KEY], result, check)
    return PaperSample(line, sample, result, parameters, check.emptied)


def _lines(path: Path, digest: Any | None) -> Iterator[tuple[int, str]]:
    """The file's lines as text, numbered from 1; ``digest`` (a hashlib object) is fed every
    byte. Bytes are decoded line by line so that invalid UTF-8 names its line."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; errors re-raised)
    except IsADirectoryError:
        raise PaperFormatError(f"{path}: is a folder, not a statistics file") from None
    except OSError as error:
        raise PaperFormatError(f"{path}: {error.strerror or error}") from None
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except OSError as error:
                raise PaperFormatError(
                    f"{path}:{number + 1}: cannot read: {error.strerror or error}"
                ) from None
            if not raw:
                return
            number += 1
            if digest is not None:
                digest.update(raw)
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise PaperFormatError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start + 1} "
                    "of the line)"
                ) from None
            yield number, text


def _differences(targets: set[tuple[int, str]], expected: set[tuple[int, str]]) -> str:
    def name(target: tuple[int, str]) -> str:
        return f"layer {target[0]} {target[1]}"

    extra = sorted(targets - expected)
    if extra:
        return f"has {name(extra[0])}, which the first line does not"
    missing = sorted(expected - targets)
    return f"has no {name(missing[0])}, which the first line has"


def _read(path: Path, digest: Any | None) -> Iterator[PaperSample]:
    expected: set[tuple[int, str]] | None = None
    seen: dict[int, int] = {}  # sample index -> the line it was on
    index = 0
    lines = 0
    for line_number, text in _lines(path, digest):
        lines = line_number
        if not text.strip(_JSON_WHITESPACE):
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
                f"{len(expected)}; every line must have the same parameters "
                f"(this one {_differences(targets, expected)})"
            )
        first = seen.get(parsed.sample.index)
        if first is not None:
            raise PaperFormatError(
                f"{where}: sample index {parsed.sample.index} repeats (line {first})"
            )
        seen[parsed.sample.index] = line_number
        yield parsed
    if expected is None:
        what = "only blank lines" if lines else "the file is empty"
        raise PaperFormatError(f"{path}: no samples ({what})")


def read_paper_jsonl(path: Path | str) -> Iterator[PaperSample]:
    """Parse a statistics file line by line; every error names the file and line.

    All lines must measure the same matrices as the first one, and their values must fit the
    cache (see the module documentation: what does not fit a REAL is stored as empty and
    counted in :attr:`PaperSample.emptied`; integers that do not fit are refused).
    """
    return _read(Path(path), None)


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
    path = Path(path)
    if path.is_dir():
        raise PaperFormatError(f"{path}: is a folder, not a statistics file")
    if not path.exists():
        raise PaperFormatError(f"{path}: no such file")
    digest = hashlib.sha256()
    first: PaperSample | None = None
    total = empty_values = empty_lines = 0
    first_empty: list[int] = []
    for parsed in _read(path, digest):
        if first is None:
            first = parsed
        total += 1
        if parsed.emptied:
            empty_values += parsed.emptied
            empty_lines += 1
            if len(first_empty) < EMPTY_LINES_KEPT:
                first_empty.append(parsed.line)
    assert first is not None  # _read raises for a file without samples
    if total > INTEGER_MAX:
        raise PaperFormatError(f"{path}: {total} samples, more than a run can hold")
    sha256 = digest.hexdigest()
    run_id = import_run_id(sha256, model, dataset, response_type, mode)

    def report(info: RunInfo) -> PaperImport:
        return PaperImport(info, empty_values, empty_lines, tuple(first_empty))

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
        for parsed in _read(path, again):
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


def _paper_entry(values: dict[str, float], spectrum: list[float] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        paper_key: values[name] for paper_key, name in PAPER_STATISTICS.items() if name in values
    }
    for paper_key in _REQUIRED:  # stored as empty: null, which the import reads as empty
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
