"""Inputs that were already answered well before the catalogue existed (kept so they stay so)."""

from __future__ import annotations

import json

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


def _without_tokenizer(world: World) -> str:
    folder = world.model_copy("no-tokenizer")
    for file in folder.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            file.unlink()
    return str(folder)


def _truncated_weights(world: World) -> str:
    folder = world.model_copy("truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return str(folder)


def _bad_config(world: World) -> str:
    folder = world.model_copy("bad-config")
    (folder / "config.json").write_text('{"model_type": "llama", ')
    return str(folder)


def _encoder(world: World) -> str:
    folder = world.model_copy("encoder")
    (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    return str(folder)


def _empty_folder(world: World) -> str:
    folder = world.root / "empty-model"
    folder.mkdir()
    return str(folder)


def _model_case(name: str, make, *names: str):
    """The same broken model through compute, check and describe: the same kind of answer."""
    return [
        Case(
            f"model-{name}-compute",
            lambda w: ["compute", "--model", make(w), "--dataset", w.dataset, "--db", w.db],
            1,
            names,
        ),
        Case(
            f"model-{name}-check",
            lambda w: ["check", make(w), "--dataset", "math", "--limit", "1", "--db", w.db],
            1,
            names,
        ),
        Case(f"model-{name}-describe", lambda w: ["describe", "--model", make(w)], 1, names),
    ]


CASES += [
    *_model_case("empty-folder", _empty_folder, "empty-model", "not a Hugging Face model folder"),
    *_model_case("bad-config", _bad_config, "bad-config", "config.json"),
    *_model_case("encoder-only", _encoder, "encoder", "not a causal LM"),
]
CASES += [
    Case(
        "model-no-tokenizer-compute",
        lambda w: [
            "compute",
            "--model",
            _without_tokenizer(w),
            "--dataset",
            w.dataset,
            "--db",
            w.db,
        ],
        1,
        ("no-tokenizer", "has no tokenizer", "tokenizer.json"),
    ),
    Case(
        "model-truncated-weights-compute",
        lambda w: [
            "compute",
            "--model",
            _truncated_weights(w),
            "--dataset",
            w.dataset,
            "--db",
            w.db,
        ],
        1,
        ("truncated", "failed to load"),
    ),
]


def _absurd_depth(world: World) -> str:
    """A config asking for more layers than the weights hold (10,000,000: transformers built
    them for minutes, growing past 6 GB, before reading a weight)."""
    folder = world.model_copy("absurd-depth")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 10_000_000
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _negative_width(world: World) -> str:
    folder = world.model_copy("negative-width")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = -5
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


CASES += [
    *_model_case(
        "absurd-depth",
        _absurd_depth,
        "absurd-depth",
        "config.json",
        "num_hidden_layers is 10000000",
    ),
    *_model_case("negative-width", _negative_width, "config.json", "hidden_size is -5"),
]
