"""Catalogue cases: data files that Python's JSON reader alone would answer with an internal
error (a recursion limit, an integer conversion limit, an overflow) or that a tokenizer would
fail on (a lone surrogate). Each is refused before any model is loaded, naming the file, the
line and the field."""

from __future__ import annotations

from collections.abc import Callable

from bad_inputs import Case, World

_GOOD = '{"instruction": "What is 2 + 2?", "output": "4"}\n'


def _compute(name: str, content: str) -> Callable[[World], list[object]]:
    def argv(world: World) -> list[object]:
        data = world.file(name, content)
        return ["compute", "--model", world.model, "--dataset", data, "--db", world.db]

    return argv


def _at(name: str, line: int | None = None) -> Callable[[World], str]:
    return lambda w: f"{w.root / name}:{line}:" if line else f"{w.root / name}:"


CASES: list[Case] = [
    Case(
        "data-nested-too-deeply",
        _compute("deep.json", "[" * 100_000),
        1,
        (_at("deep.json"), "nested too deeply"),
    ),
    Case(
        "data-line-nested-too-deeply",
        _compute("deep.jsonl", _GOOD + "[" * 100_000 + "\n"),
        1,
        (_at("deep.jsonl", 2), "nested too deeply"),
    ),
    Case(
        "data-400-digit-integer",
        _compute("digits.jsonl", _GOOD + _GOOD.replace("}", f', "score": 1{"0" * 399}}}')),
        1,
        (_at("digits.jsonl", 2), "field 'score'", "400 digits"),
    ),
    Case(
        "data-integer-literal-too-long",
        _compute("literal.jsonl", _GOOD.replace("}", f', "id": {"9" * 5001}}}')),
        1,
        (_at("literal.jsonl", 1), "field 'id'", "5001 digits"),
    ),
    Case(
        "data-lone-surrogate",
        _compute("surrogate.jsonl", _GOOD + _GOOD.replace("4", "4\\ud800")),
        1,
        (_at("surrogate.jsonl", 2), "output field 'output'", "lone surrogate"),
    ),
]
