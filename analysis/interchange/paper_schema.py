"""The paper's statistics-file format: its keys, the parameter names it is keyed by, and what
each value may hold.

Why: the authors of arXiv 2410.23743 (and its follow-up, arXiv 2504.10766) released their
per-sample gradient statistics as JSON lines, and their plotting scripts read that format. Importing
those files lets a user put the paper's own numbers next to their runs in the same charts and
tables; exporting lets the paper's scripts (or anyone's) read layerscope's numbers.

Why a module of its own, below the reader (:mod:`.paper_parse`) and the writer
(:mod:`.paper_export`): a file layerscope writes must read back as the same run, so both sides
take every key, and the mapping from the paper's names to layerscope's, from one owner; and the
rules for a single value (what the cache's columns hold, what is stored as empty and counted)
sit next to the keys they apply to, so the reader is left with the structure of a line and a
file.

The format, one JSON object per line and sample::

    {"instruction": ..., "output": ..., "loss": 1.23,
     "model.layers.0.self_attn.q_proj.weight": {"M_mean": ..., "M_max": ..., "M_min": ...,
        "frobenius_norm": ..., "S_sum": ..., "S_max": ..., "S_min": ..., "S_list": [...]}, ...}

keyed by the model's own parameter names (:func:`parse_parameter_name`). ``S_list`` (all
singular values) appears in the follow-up paper's files and in layerscope's exports of runs
computed with ``--spectra``. The paper's ``instruction`` already contains the input, joined by a
newline.

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

The paper's short names map to layerscope's in :data:`PAPER_STATISTICS`: ``S_sum`` is the nuclear
norm, ``S_max``/``S_min`` the largest/smallest singular value, ``M_*`` the mean/max/min entry.
Exports add one key the paper's scripts ignore, ``"layerscope": {"index", "prompt_tokens",
"response_tokens"}`` (:data:`METADATA_KEY`), so that an export imported again gives the
identical run.

What a line's values may be (:class:`LineValues`), checked against what the cache's columns can
hold (:mod:`layerscope.analysis.cache.schema`):

* statistics (REAL, float32), singular values and cosines: a value that is not finite (``NaN``,
  ``Infinity``, ``1e400``, which JSON reads as infinity) or beyond float32's range (``1e39``, an
  integer of 400 digits) is **stored as empty** (NULL; a cosine: NaN), not refused: one broken
  matrix should not cost the other numbers of a file, and an empty value is what a reader of the
  cache sees anyway. Such values are counted per line, and ``layerscope import`` reports them.
  An empty value is left out of its layer's mean only (a NaN the engine computes drops the
  sample from its projection's whole curve, the paper's rule); a derived statistic whose input
  is empty is empty too, and one whose result is beyond float32 is stored as empty and counted.
  JSON ``null`` is an empty value that was already empty (exports write it): stored as empty,
  not counted;
* ``loss`` (DOUBLE) must be a number; one that is not finite is stored as **NaN**, and counted
  with the empty values: the engine stores a NaN loss the same way, every aggregate leaves it
  out as not finite, and so an export of a computed run with such a sample imports again as the
  same run. Refusing the whole file for it would lose every other sample (the import is all or
  nothing), and NULL would hide it from the counts of non-finite losses;
* integers must fit their INTEGER/SMALLINT columns or the line is refused, naming the key:
  ``layerscope.index`` (0 to 2^31 - 1), ``layerscope.prompt_tokens``/``response_tokens`` (the
  same, or absent), and the layer number in a parameter name or a cosine's layer (at most
  32767). Texts (instruction, output, parameter names) must be encodable as UTF-8 (JSON can
  spell a lone surrogate, ``"\\ud800"``, which no text column holds);
* what no gradient has is refused, naming the key (:meth:`LineValues.possible`): a negative
  loss, norm or singular value, ``S_max`` above ``S_sum`` or below ``S_min``, ``M_max`` below
  ``M_min`` (up to a relative 1e-5 for two numbers rounded apart). Stored, such a line would
  put impossible ratios (``sigma1_ratio`` above 1) into every curve it is part of; an empty
  value, by contrast, only leaves itself out.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import PROJECTIONS
from layerscope.analysis.cache.schema import INTEGER_MAX, REAL_LIMIT, SMALLINT_MAX
from layerscope.analysis.models.targets import ARCHITECTURES

__all__ = [
    "COSINE_KEY",
    "FOLLOW_UP_PAIRS",
    "FOLLOW_UP_PAIR_NAMES",
    "FOLLOW_UP_PROJECTIONS",
    "METADATA_KEY",
    "PAIR_COSINE_KEY",
    "PAPER_STATISTICS",
    "REQUIRED_STATISTICS",
    "SPECTRUM_KEY",
    "LineValues",
    "PaperFormatError",
    "describe",
    "parse_parameter_name",
    "printable",
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
# Statistics no matrix has below zero (norms and singular values).
NON_NEGATIVE = ("frobenius_norm", "S_sum", "S_max", "S_min")
# (lower, higher, why): pairs of statistics whose order every matrix keeps. The tolerance
# (relative to the higher) forgives the rounding of two numbers computed apart.
ORDERED = (
    ("S_max", "S_sum", "the largest singular value is never above the sum of them all"),
    ("S_min", "S_max", "the smallest singular value is never above the largest"),
    ("M_min", "M_max", "the smallest entry is never above the largest"),
)
ORDER_TOLERANCE = 1e-5
# The keys a matrix's entry must have, unless it has the spectrum they are computed from.
REQUIRED_STATISTICS = ("S_sum", "S_max")
SPECTRUM_KEY = "S_list"
# The follow-up's per-line cosines: layer-by-layer matrices per projection, q-o / k-v per layer.
COSINE_KEY = "cosine_sim"
PAIR_COSINE_KEY = "cosine_sim_qkvo"
FOLLOW_UP_PROJECTIONS = {f"{p}_proj": p for p in PROJECTIONS}
FOLLOW_UP_PAIRS = {"q-o": "q_proj_x_o_proj", "k-v": "k_proj_x_v_proj"}
FOLLOW_UP_PAIR_NAMES = {name: pair for pair, name in FOLLOW_UP_PAIRS.items()}
METADATA_KEY = "layerscope"
# Longer keys are never parameter names (the longest real ones have about 60 characters); the
# limit also keeps the name pattern's backtracking cheap on garbage.
_MAX_PARAMETER_NAME = 256


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


def printable(text: str, limit: int = 60) -> str:
    """A key or text from the file as one printable line (control characters and lone
    surrogates escaped), shortened."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    escaped = escaped.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def describe(value: Any) -> str:
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
        return f'a string "{printable(value, 30)}"'
    if isinstance(value, list):
        return "a list"
    return "an object"


def _number(value: Any, where: str, key: str) -> float:
    """A JSON number as a float: infinity for integers beyond a double's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PaperFormatError(f"{where}: {key} must be a number, got {describe(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer of more than 308 digits
        return math.inf if value > 0 else -math.inf


def _fits_real(value: float) -> bool:
    """Whether a REAL (float32) column stores this as the number it is (NaN: False)."""
    return abs(value) < REAL_LIMIT


class LineValues:
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
        number = _number(value, self.where, f"{printable(key)}.{part}")
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
            if number < 0:
                raise PaperFormatError(
                    f"{self.where}: loss is {number!r}; a loss (a cross-entropy) is never negative"
                )
            return number
        self.emptied += 1
        return math.nan

    def possible(
        self, key: str, given: Any, values: dict[str, float], spectrum: list[float | None] | None
    ) -> None:
        """Refuse what no gradient has: a negative norm or singular value, the largest singular
        value above their sum or below the smallest, the largest entry below the smallest.
        ``values`` are a matrix's statistics by layerscope's names (from the keys ``given`` or
        from its spectrum); empty ones (not finite) are not checked."""
        name = printable(key)

        def source(paper_key: str) -> str:
            return f"{name}.{paper_key if paper_key in given else SPECTRUM_KEY}"

        for position, value in enumerate(spectrum or ()):
            if value is not None and value < 0:
                raise PaperFormatError(
                    f"{self.where}: {name}.{SPECTRUM_KEY}[{position}] is {value!r}; a singular "
                    "value is never negative"
                )
        for paper_key in NON_NEGATIVE:
            value = values.get(PAPER_STATISTICS[paper_key])
            if value is not None and value < 0:
                raise PaperFormatError(
                    f"{self.where}: {source(paper_key)} is {value!r}; a norm or singular value "
                    "is never negative"
                )
        for low_key, high_key, why in ORDERED:
            low = values.get(PAPER_STATISTICS[low_key])
            high = values.get(PAPER_STATISTICS[high_key])
            if low is not None and high is not None and low - high > ORDER_TOLERANCE * abs(high):
                raise PaperFormatError(
                    f"{self.where}: {source(low_key)} ({low!r}) is above {source(high_key)} "
                    f"({high!r}); {why}"
                )

    def integer(self, value: Any, key: str, *, optional: bool = False) -> int | None:
        """An INTEGER column's value: 0 to INTEGER_MAX (or absent/null when optional)."""
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INTEGER_MAX:
            return value
        absent = " (or absent)" if optional else ""
        raise PaperFormatError(
            f"{self.where}: {key} must be an integer from 0 to {INTEGER_MAX}{absent}, "
            f"got {describe(value)}"
        )

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise PaperFormatError(f"{self.where}: {key} must be a string, got {describe(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            bad = value[error.start]
            raise PaperFormatError(
                f"{self.where}: {printable(key)} is not text a cache can hold "
                f"(a lone surrogate \\u{ord(bad):04x} at character {error.start + 1})"
            ) from None
        return value

    def cosine(self, value: Any, key: str) -> float:
        """One cosine from the file: NaN for null (undefined: a zero gradient) and, counted as
        an emptied value, for one that is not finite or beyond float32."""
        if value is None:
            return math.nan
        number = _number(value, self.where, key)
        if _fits_real(number):
            return number
        self.emptied += 1
        return math.nan

    def layer(self, value: Any, key: str) -> int:
        """A SMALLINT layer number: an integer, or a decimal string (a JSON object's key)."""
        if isinstance(value, str) and value.isdecimal() and len(value) <= _LAYER_DIGITS:
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SMALLINT_MAX:
            return value
        raise PaperFormatError(
            f"{self.where}: {key} must be a layer number from 0 to {SMALLINT_MAX}, "
            f"got {describe(value)}"
        )
