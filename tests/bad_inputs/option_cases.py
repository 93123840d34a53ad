"""Catalogue cases: options and their values, checked before any work or cache look-up.

Most are asked of a request the canary cache already answers (``world.compute_argv``), so an
option checked only when there is work would say "cached" and exit 0.
"""

from __future__ import annotations

from bad_inputs import Case, World


def _cached(*changes: str):
    """The canary's complete computed request, with ``changes`` appended (last one wins)."""

    def argv(world: World) -> list[str]:
        return ["compute", *world.compute_argv, "--db", str(world.db), *changes]

    return argv


def _check(*changes: str):
    def argv(world: World) -> list[str]:
        return ["check", str(world.model), "--dataset", "math", "--db", str(world.db), *changes]

    return argv


def _show(*changes: str):
    def argv(world: World) -> list[str]:
        return ["show", world.computed_run, "--db", str(world.db), *changes]

    return argv


def _select(*changes: str):
    def argv(world: World) -> list[str]:
        output = str(world.root / "selected.json")
        return ["select", world.computed_run, "--output", output, "--db", str(world.db), *changes]

    return argv


CASES: list[Case] = [
    Case("option-device-unknown", _cached("--device", "tpu9"), 2, ("--device", "'tpu9'")),
    Case("option-device-cuda-absent", _cached("--device", "cuda"), 1, ("--device cuda", "CUDA")),
    Case("option-device-cuda-index", _cached("--device", "cuda:7"), 1, ("--device cuda:7",)),
    Case("option-device-empty", _cached("--device", ""), 2, ("--device",)),
    Case("option-dtype-unknown", _cached("--dtype", "float8"), 2, ("--dtype", "float8")),
    Case("option-batch-size-zero", _cached("--batch-size", "0"), 2, ("--batch-size",)),
    Case("option-batch-size-text", _cached("--batch-size", "four"), 2, ("--batch-size", "four")),
    Case("option-max-length-negative", _cached("--max-length", "-1"), 2, ("--max-length",)),
    Case("option-limit-negative", _cached("--limit", "-3"), 2, ("--limit",)),
    Case(
        "option-seed-without-limit", _cached("--sample-seed", "1"), 2, ("--sample-seed", "--limit")
    ),
    Case("option-modules-unknown", _cached("--modules", "ffn"), 2, ("--modules", "ffn")),
    Case("option-mode-unknown", _cached("--mode", "chat"), 2, ("--mode", "chat")),
    Case("option-types-unknown", _cached("--types", "nonesuch"), 1, ("nonesuch",)),
    Case("option-types-empty", _cached("--types", ""), 2, ("--types", "''")),
    Case("option-types-only-commas", _cached("--types", ",,,"), 2, ("--types", "',,,'")),
    Case("option-check-device-unknown", _check("--device", "tpu9"), 2, ("--device", "'tpu9'")),
    Case("option-check-metric-unknown", _check("--metric", "bogus"), 2, ("--metric", "bogus")),
    Case("option-show-proj-unknown", _show("--proj", "q,x"), 2, ("--proj", "'x'")),
    Case(
        "option-show-proj-not-measured",
        _show("--proj", "gate"),
        2,
        ("--proj gate", "no gate matrices", "--modules attn"),
    ),
    Case("option-show-tokens-empty", _show("--tokens", "9-1"), 2, ("--tokens", "9-1")),
    Case("option-show-tokens-text", _show("--tokens", "abc"), 2, ("--tokens", "abc")),
    Case(
        "option-export-format-unknown",
        lambda w: ["export", w.computed_run, "--format", "xml", "--output", "x", "--db", w.db],
        2,
        ("--format", "xml"),
    ),
    Case(
        "option-import-mode-unknown",
        lambda w: [
            "import",
            w.file("s.jsonl", "{}\n"),
            "--model",
            "m",
            "--dataset",
            "d",
            "--type",
            "t",
            "--mode",
            "chat",
            "--db",
            w.db,
        ],
        2,
        ("--mode", "chat"),
    ),
    Case(
        "option-select-layers-beyond",
        _select("--by", "nuclear", "--top", "2", "--layers", "0-99"),
        2,
        ("--layers 0-99", "has layers 0-"),
    ),
    Case("option-select-by-unknown", _select("--by", "bogus", "--top", "2"), 2, ("--by", "bogus")),
    Case("option-select-no-end", _select("--by", "nuclear"), 2, ("--top", "--bottom")),
    Case(
        "option-correlations-with-unknown",
        lambda w: ["correlations", w.computed_run, "--with", "nonesuch", "--db", str(w.db)],
        2,
        ("--with nonesuch", "loss"),
    ),
    Case("option-unknown-command", lambda w: ["frobnicate"], 2, ("frobnicate",)),
    Case("option-unknown-option", _show("--colour", "red"), 2, ("--colour",)),
]
