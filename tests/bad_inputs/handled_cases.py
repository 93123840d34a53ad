"""Inputs that were already answered well before the catalogue existed (kept so they stay so)."""

from __future__ import annotations

from bad_inputs import Case, World


def _compute(world: World, *changes: str) -> list[str]:
    return ["compute", *world.compute_argv, "--db", str(world.db), *changes]


CASES: list[Case] = [
    Case(
        "compute-missing-model",
        lambda w: ["compute", "--model", w.root / "no-model", "--dataset", w.dataset, "--db", w.db],
        1,
        (lambda w: str(w.root / "no-model"),),
    ),
    Case(
        "describe-missing-model",
        lambda w: ["describe", "--model", w.root / "no-model"],
        1,
        (lambda w: str(w.root / "no-model"),),
    ),
    Case(
        "compute-malformed-data-line",
        lambda w: [
            "compute",
            "--model",
            w.model,
            "--dataset",
            w.file("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instr\n'),
            "--db",
            w.db,
        ],
        1,
        (lambda w: f"{w.root / 'bad.jsonl'}:2",),
    ),
    Case(
        "compute-empty-dataset",
        lambda w: [
            "compute",
            "--model",
            w.model,
            "--dataset",
            w.file("empty.json", "[]"),
            "--db",
            w.db,
        ],
        1,
        (lambda w: str(w.root / "empty.json"), "no samples"),
    ),
    Case(
        "import-no-statistics",
        lambda w: [
            "import",
            w.file("stats.jsonl", '{"loss": 1.0}\n'),
            "--model",
            "m",
            "--dataset",
            "d",
            "--type",
            "t",
            "--db",
            w.db,
        ],
        1,
        (lambda w: f"{w.root / 'stats.jsonl'}:1", "no gradient statistics"),
    ),
    Case("show-unknown-run", lambda w: ["show", "ffffffff", "--db", w.db], 1, ("unknown run",)),
    Case(
        "show-unknown-metric",
        lambda w: ["show", w.computed_run, "--metric", "bogus", "--db", w.db],
        2,
        ("--metric", "bogus"),
    ),
    Case(
        "compute-limit-zero",
        lambda w: _compute(w, "--limit", "0"),
        2,
        ("--limit",),
    ),
]
