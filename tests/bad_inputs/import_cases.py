"""Catalogue cases: import (``layerscope import FILE``). Every refusal names ``FILE:LINE`` where
there is a line, and the canary's runs stay as they were (the import is all or nothing)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bad_inputs import Case, World


def _record(index: int, layers: int = 2) -> dict:
    """A valid line of the paper's format, with layerscope's metadata."""
    record: dict = {"instruction": f"Q{index}?", "output": "A.", "loss": 1.5}
    for layer in range(layers):
        for p in "qkvo":
            record[f"model.layers.{layer}.self_attn.{p}_proj.weight"] = {
                "M_mean": 0.01, "M_max": 0.5, "M_min": -0.5, "frobenius_norm": 5.0,
                "S_sum": 7.0, "S_max": 4.0, "S_min": 0.5,
            }  # fmt: skip
    record["layerscope"] = {"index": index, "prompt_tokens": 10, "response_tokens": 20}
    return record


def _valid(index: int) -> str:
    return json.dumps(_record(index))


def _changed(index: int, change: Callable[[dict], object]) -> str:
    record = _record(index)
    change(record)
    return json.dumps(record)


def _stats(name: str, *lines: str | bytes) -> Callable[[World], Path]:
    """A statistics file of these lines (valid ones around the broken one)."""

    def make(world: World) -> Path:
        raw = [line.encode() if isinstance(line, str) else line for line in lines]
        return world.file(name, b"\n".join(raw) + b"\n")

    return make


def _import(file: Callable[[World], Path | str]) -> Callable[[World], list[str | Path]]:
    def argv(world: World) -> list[str | Path]:
        return ["import", file(world), "--model", "m", "--dataset", "d", "--type", "t",
                "--db", world.db]  # fmt: skip

    return argv


def _named(model: str = "m", dataset: str = "d", response_type: str = "t"):
    """An import of a valid file under these names."""

    def argv(world: World) -> list[str | Path]:
        file = world.file("named.jsonl", _valid(0) + "\n")
        return ["import", file, "--model", model, "--dataset", dataset, "--type", response_type,
                "--db", world.db]  # fmt: skip

    return argv


def _at(name: str, line: int | None = None) -> Callable[[World], str]:
    """The file (and line) the error must name."""
    return lambda w: f"{w.root / name}:{line}:" if line else f"{w.root / name}:"


def _set_metadata(key: str, value: object) -> Callable[[dict], None]:
    return lambda record: record["layerscope"].__setitem__(key, value)


def _case(case_id: str, name: str, lines: tuple[str | bytes, ...], line: int, *names: str) -> Case:
    return Case(case_id, _import(_stats(name, *lines)), 1, (_at(name, line), *names))


_LONG = "1" + "0" * 399  # a 400-digit integer: JSON reads it, no column holds it

CASES: list[Case] = [
    _case(
        "import-index-out-of-range",
        "index.jsonl",
        (_valid(0), _valid(1), _changed(2, _set_metadata("index", 2**40))),
        3,
        "layerscope.index",
        "1099511627776",
    ),
    _case(
        "import-token-count-out-of-range",
        "tokens.jsonl",
        (_valid(0), _changed(1, _set_metadata("response_tokens", 2**31))),
        2,
        "layerscope.response_tokens",
    ),
    _case(
        "import-layer-out-of-range",
        "layer.jsonl",
        (
            json.dumps(
                {
                    **_record(0, layers=1),
                    "model.layers.40000.self_attn.q_proj.weight": {"S_sum": 1.0, "S_max": 1.0},
                }
            ),
        ),
        1,
        "model.layers.40000.self_attn.q_proj.weight",
        "layer number",
    ),
    _case(
        "import-400-digit-integer",
        "digits.jsonl",
        (_valid(0), _valid(1).replace('"prompt_tokens": 10', f'"prompt_tokens": {_LONG}')),
        2,
        "layerscope.prompt_tokens",
        "an integer of 400 digits",
    ),
    _case(
        "import-integer-literal-too-long",
        "literal.jsonl",
        (_valid(0).replace('"loss": 1.5', f'"loss": {"9" * 5000}'),),
        1,
        "not valid JSON",
        "too long",
    ),
    _case(
        "import-token-count-not-a-number",
        "abc.jsonl",
        (_changed(0, _set_metadata("prompt_tokens", "abc")),),
        1,
        "layerscope.prompt_tokens",
        '"abc"',
    ),
    _case(
        "import-invalid-utf8",
        "utf8.jsonl",
        (_valid(0), _valid(1), _valid(2).encode().replace(b"Q2?", b"Q\xff?")),
        3,
        "not UTF-8",
    ),
    _case(
        "import-lone-surrogate",
        "surrogate.jsonl",
        (_valid(0).replace('"Q0?"', '"Q\\ud800"'),),
        1,
        "instruction",
        "surrogate",
    ),
    _case("import-not-json", "broken.jsonl", (_valid(0), '{"loss": 1.0,'), 2, "not valid JSON"),
    _case("import-not-an-object", "array.jsonl", (_valid(0), "[1, 2, 3]"), 2, "a JSON object"),
    _case(
        "import-missing-loss",
        "noloss.jsonl",
        (_valid(0), _changed(1, lambda r: r.pop("loss"))),
        2,
        'no "loss"',
    ),
    _case(
        "import-loss-not-a-number",
        "textloss.jsonl",
        (_changed(0, lambda r: r.__setitem__("loss", "low")),),
        1,
        "loss must be a number",
    ),
    _case(
        "import-statistic-not-a-number",
        "textstat.jsonl",
        (
            _changed(
                0, lambda r: r["model.layers.1.self_attn.v_proj.weight"].__setitem__("S_max", "x")
            ),
        ),
        1,
        "model.layers.1.self_attn.v_proj.weight.S_max",
    ),
    _case(
        "import-matrix-without-s-sum",
        "nosum.jsonl",
        (
            _valid(0),
            _changed(1, lambda r: r["model.layers.0.self_attn.k_proj.weight"].pop("S_sum")),
        ),
        2,
        "model.layers.0.self_attn.k_proj.weight has no S_sum",
    ),
    _case(
        "import-metadata-not-an-object",
        "meta.jsonl",
        (_changed(0, lambda r: r.__setitem__("layerscope", [0])),),
        1,
        "layerscope must be an object",
    ),
    _case(
        "import-duplicated-index",
        "twice.jsonl",
        (_valid(0), _valid(1), _valid(1)),
        3,
        "sample index 1 repeats (line 2)",
    ),
    _case(
        "import-mismatched-matrices",
        "mismatch.jsonl",
        (
            _valid(0),
            _changed(1, lambda r: r.pop("model.layers.1.self_attn.o_proj.weight")),
        ),
        2,
        "measures 7 matrices, the first line 8",
        "layer 1 o",
    ),
    _case(
        "import-negative-loss",
        "negloss.jsonl",
        (_valid(0), _changed(1, lambda r: r.__setitem__("loss", -2.5))),
        2,
        "loss is -2.5",
        "never negative",
    ),
    _case(
        "import-negative-norm",
        "negnorm.jsonl",
        (
            _changed(
                0,
                lambda r: r["model.layers.1.self_attn.k_proj.weight"].__setitem__("S_sum", -7.0),
            ),
        ),
        1,
        "model.layers.1.self_attn.k_proj.weight.S_sum is -7.0",
    ),
    _case(
        "import-sigma-max-above-nuclear",
        "sigma.jsonl",
        (
            _valid(0),
            _valid(1),
            _changed(
                2,
                lambda r: r["model.layers.0.self_attn.o_proj.weight"].__setitem__("S_max", 70.0),
            ),
        ),
        3,
        "model.layers.0.self_attn.o_proj.weight.S_max (70.0) is above",
        "o_proj.weight.S_sum (7.0)",
    ),
    Case("import-model-name-empty", _named(model=""), 2, ("--model", "expected a name")),
    Case(
        "import-dataset-name-newline",
        _named(dataset="gsm8k\nfake line"),
        2,
        ("--dataset", "control character", "'gsm8k\\nfake line'"),
    ),
    Case(
        "import-type-name-escape",
        _named(response_type="t\x1b[2J"),
        2,
        ("--type", "control character", "'t\\x1b[2J'"),
    ),
    Case(
        "import-no-such-file",
        _import(lambda w: w.root / "missing.jsonl"),
        1,
        (lambda w: f"{w.root / 'missing.jsonl'}: no such file",),
    ),
    Case(
        "import-a-folder",
        _import(lambda w: w.root),
        1,
        (lambda w: f"{w.root}: is a folder",),
    ),
    Case(
        "import-empty-file",
        _import(lambda w: w.file("empty.jsonl", "")),
        1,
        (_at("empty.jsonl"), "no samples"),
    ),
    Case(
        "import-blank-lines-only",
        _import(lambda w: w.file("blank.jsonl", "\n \n\t\n")),
        1,
        (_at("blank.jsonl"), "no samples (only blank lines)"),
    ),
]
