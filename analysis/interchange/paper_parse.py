"""Reading the paper's statistics files: each line into one sample in layerscope's terms, every
error naming ``FILE:LINE``.

Why a module of its own: reading a file is what the import (:mod:`.paper_ingest`) stores and
what a test or a script inspects, and it needs no cache and no model: :func:`read_paper_jsonl`
yields :class:`PaperSample` records, checked and complete, and knows nothing of runs or
transactions. The keys and the rules for each value are the format's
(:mod:`.paper_schema`); what is here is the structure of a line (its matrices, cosines and
metadata), the statistics derived from it and the agreement between lines.

On reading, the other statistics are derived where the file allows it, with the engine's
definitions: sigma1_ratio = S_max / S_sum, nuclear_per_loss = S_sum / loss, stable_rank =
frobenius_norm^2 / S_max^2 (the Frobenius norm is the root of the sum of squared singular values,
so this needs no spectrum), and effective_rank (exp of the entropy of S / S_sum) only with
``S_list``; each is NaN where its denominator is zero, as in the engine. Token counts are not in
the paper's files: imported samples have none (NULL), so length control leaves them out.

Why so strict: every line is checked against what the cache's columns can hold before anything
is stored, so that DuckDB never meets a value it refuses halfway through a file, and every
complaint names ``FILE:LINE``:

* the file is read as bytes and each line decoded on its own, so invalid UTF-8 names its line;
  a UTF-8 byte order mark on the first line is allowed. Lines that are only whitespace are
  skipped. JSON that Python's parser refuses for other reasons than syntax (an integer of more
  than 4300 digits, arrays nested thousands deep) is "not valid JSON" with the line too;
* every line must measure the same matrices as the first one, and a sample index may not
  repeat;
* a value the cache's columns cannot hold is stored as empty and counted in
  :attr:`PaperSample.emptied`, or refused, as :mod:`.paper_schema` says for each kind, and so
  is a value no gradient has (a negative norm, ``S_max`` above ``S_sum``).

What is not refused is not dropped silently either: a key the format does not know (a
``zz_proj`` matrix, a field of the user's own) is left out of the run and listed in
:attr:`PaperSample.unknown`, which the import reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.analysis.base.records import (
    PROJECTIONS,
    MatrixStatistics,
    Sample,
    SampleResult,
)
from layerscope.analysis.cache.schema import SMALLINT_MAX
from layerscope.analysis.interchange.paper_schema import (
    COSINE_KEY,
    FOLLOW_UP_PAIR_NAMES,
    FOLLOW_UP_PROJECTIONS,
    METADATA_KEY,
    PAIR_COSINE_KEY,
    PAPER_STATISTICS,
    REQUIRED_STATISTICS,
    SPECTRUM_KEY,
    LineValues,
    PaperFormatError,
    describe,
    parse_parameter_name,
    printable,
)

__all__ = ["PaperSample", "read_paper_jsonl"]

_JSON_WHITESPACE = " \t\r\n"
# The keys of a line besides its matrices' parameter names.
_OTHER_KEYS = frozenset(
    {"instruction", "output", "loss", METADATA_KEY, COSINE_KEY, PAIR_COSINE_KEY}
)


@dataclass
class PaperSample:
    """One line of a statistics file, in layerscope's terms."""

    line: int
    sample: Sample
    result: SampleResult
    parameters: dict[tuple[int, str], str]  # (layer, projection) -> parameter name
    emptied: int = 0  # values of this line stored as empty (not finite or beyond float32)
    # Its keys the format does not know (not a text, the loss, a measured matrix, cosines or
    # layerscope's metadata), left out of the run; the import reports them.
    unknown: tuple[str, ...] = ()


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _derived(
    values: dict[str, float],
    loss: float,
    spectrum: list[float | None] | None,
    check: LineValues,
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
    check: LineValues,
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


def _layer_cosines(raw: Any, result: SampleResult, check: LineValues) -> None:
    """``cosine_sim``: per projection, the layer-by-layer matrix between ``layer_indices``."""
    where = check.where
    if not isinstance(raw, dict):
        raise PaperFormatError(f"{where}: {COSINE_KEY} must be an object, got {describe(raw)}")
    for name, block in raw.items():
        key = f"{COSINE_KEY}.{printable(name)}"
        projection = FOLLOW_UP_PROJECTIONS.get(name)
        if projection is None:
            raise PaperFormatError(
                f"{where}: {key} is not a projection (q_proj, k_proj, v_proj, o_proj, gate_proj, "
                "up_proj, down_proj)"
            )
        if not isinstance(block, dict) or "layer_indices" not in block or "matrix" not in block:
            raise PaperFormatError(
                f"{where}: {key} must be an object with layer_indices and matrix, "
                f"got {describe(block)}"
            )
        indices, matrix = block["layer_indices"], block["matrix"]
        if not isinstance(indices, list):
            raise PaperFormatError(
                f"{where}: {key}.layer_indices must be a list, got {describe(indices)}"
            )
        layers = [check.layer(v, f"{key}.layer_indices") for v in indices]
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
            [check.cosine(v, f"{key}.matrix") for v in row] for row in matrix
        ]
        result.cosine_layers[projection] = layers


def _pair_cosines(raw: Any, result: SampleResult, check: LineValues) -> None:
    """``cosine_sim_qkvo``: per layer (a decimal string), the q-o and k-v cosines."""
    where = check.where
    if not isinstance(raw, dict):
        raise PaperFormatError(f"{where}: {PAIR_COSINE_KEY} must be an object, got {describe(raw)}")
    found: dict[str, list[tuple[int, float]]] = {}
    for layer_key, entry in raw.items():
        key = f"{PAIR_COSINE_KEY}.{printable(layer_key)}"
        layer = check.layer(layer_key, f"{PAIR_COSINE_KEY} key")
        if not isinstance(entry, dict):
            raise PaperFormatError(f"{where}: {key} must be an object, got {describe(entry)}")
        for name, value in entry.items():
            pair = FOLLOW_UP_PAIR_NAMES.get(name)
            if pair is None:
                raise PaperFormatError(
                    f"{where}: {key}.{printable(name)} is not q_proj_x_o_proj or k_proj_x_v_proj"
                )
            found.setdefault(pair, []).append((layer, check.cosine(value, f"{key}.{name}")))
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
    key: str, entry: dict[str, Any], target: tuple[int, str], loss: float, check: LineValues
) -> MatrixStatistics:
    where = check.where
    missing = [k for k in REQUIRED_STATISTICS if k not in entry]
    if missing and SPECTRUM_KEY not in entry:
        raise PaperFormatError(
            f"{where}: {printable(key)} has no {missing[0]} (nor {SPECTRUM_KEY})"
        )
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
                f"{where}: {printable(key)}.{SPECTRUM_KEY} must be a list, got {describe(raw)}"
            )
        spectrum = [check.statistic(v, key, SPECTRUM_KEY) for v in raw]
        _from_spectrum(entry, values, spectrum, check)
    check.possible(key, entry, values, spectrum)
    _derived(values, loss, spectrum, check)
    return MatrixStatistics(target[0], target[1], values, spectrum)


def _parse_line(text: str, where: str, index: int, line: int) -> PaperSample:
    record = _decode_json(text, where)
    if not isinstance(record, dict):
        raise PaperFormatError(f"{where}: expected a JSON object, got {describe(record)}")
    check = LineValues(where)
    if "loss" not in record:
        raise PaperFormatError(f'{where}: no "loss"')
    loss = check.loss(record["loss"])
    instruction = check.text(record.get("instruction", ""), "instruction")
    output = check.text(record.get("output", ""), "output")
    metadata = record.get(METADATA_KEY, {})
    if not isinstance(metadata, dict):
        raise PaperFormatError(
            f"{where}: {METADATA_KEY} must be an object, got {describe(metadata)}"
        )
    matrices: list[MatrixStatistics] = []
    parameters: dict[tuple[int, str], str] = {}
    unknown: list[str] = []
    for key, entry in record.items():
        if key in _OTHER_KEYS:
            continue
        target = parse_parameter_name(key)
        if target is None:
            unknown.append(key)
            continue
        if not isinstance(entry, dict):
            raise PaperFormatError(
                f"{where}: {printable(key)} must be an object of statistics, got {describe(entry)}"
            )
        check.text(key, key)  # stored as the target's parameter name
        if target[0] > SMALLINT_MAX:
            raise PaperFormatError(
                f"{where}: {printable(key)}: its layer number does not fit the cache "
                f"(at most {SMALLINT_MAX})"
            )
        if target in parameters:
            raise PaperFormatError(
                f"{where}: {printable(key)} and {printable(parameters[target])} are both layer "
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
    return PaperSample(line, sample, result, parameters, check.emptied, tuple(unknown))


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


def read_paper_jsonl(path: Path | str, digest: Any | None = None) -> Iterator[PaperSample]:
    """Parse a statistics file line by line; every error names the file and line.

    All lines must measure the same matrices as the first one, and their values must fit the
    cache (see the module documentation: what does not fit a REAL is stored as empty and
    counted in :attr:`PaperSample.emptied`; integers that do not fit are refused). ``digest``
    (a hashlib object), when given, is fed every byte of the file as it is read.
    """
    return _read(Path(path), digest)
