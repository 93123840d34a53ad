"""Finding, checking, fingerprinting and loading models: local folders and the local HF cache."""

from __future__ import annotations

import json
import os

import pytest
import torch
from modelkit import make_model, make_tokenizer

from layerscope.analysis.models.identity import model_identity
from layerscope.analysis.models.inspection import inspect_model_path, list_cached_models
from layerscope.analysis.models.loading import load_model
from layerscope.analysis.models.sources import ModelLoadError, resolve_model_spec
from layerscope.app.settings_presentation import option_name


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "my-llama"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, model_folder):
    """A local Hugging Face cache holding org/cached-llama at one revision (blobs + links)."""
    root = tmp_path / "hub"
    repo = root / "models--org--cached-llama"
    revision = "0123abcd" * 5
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in model_folder.iterdir():
        blob = repo / "blobs" / f"sha-{file.name}"
        blob.write_bytes(file.read_bytes())
        os.symlink(blob, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return revision


def test_local_folder_loads_with_options(model_folder):
    loaded = load_model(str(model_folder), dtype="float64", device="cpu")
    assert loaded.dtype == torch.float64
    assert next(loaded.model.parameters()).dtype == torch.float64
    assert not loaded.model.training
    assert [t.projection for t in loaded.targets("attn")][:4] == ["q", "k", "v", "o"]
    assert loaded.num_layers == 3
    assert loaded.has_chat_template


def test_default_dtype_on_cpu_is_float32(model_folder):
    assert load_model(str(model_folder)).dtype == torch.float32


def test_cached_hub_model_is_found_without_network(hub_cache):
    source = resolve_model_spec("org/cached-llama")
    assert source.revision == hub_cache
    models = list_cached_models()
    assert [(m.name, m.model_type, m.num_layers) for m in models] == [
        ("org/cached-llama", "llama", 3)
    ]
    assert models[0].size_bytes > 0
    loaded = load_model("org/cached-llama")
    assert loaded.name == "org/cached-llama"
    assert loaded.identity["revision"] == hub_cache
    # Blobs are named by content hash: the fingerprint uses the name, not the bytes.
    assert loaded.identity["weights_fingerprint"]


def test_identity_changes_with_the_weights(model_folder):
    before = model_identity(str(model_folder))
    model = make_model("llama", seed=1)
    model.save_pretrained(model_folder)
    after = model_identity(str(model_folder))
    assert before["config_sha256"] == after["config_sha256"]
    assert before["weights_fingerprint"] != after["weights_fingerprint"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such folder, and not in the local Hugging Face cache"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
    ],
    ids=["missing", "file", "no-config"],
)
def test_bad_model_paths_are_explained(tmp_path, make, message):
    path = make(tmp_path)
    check = inspect_model_path(str(path))
    assert not check.ok and message in check.message
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(path))


def test_not_a_causal_lm_is_refused(tmp_path):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    check = inspect_model_path(str(folder))
    assert not check.ok
    assert "not a causal LM (BertForMaskedLM)" in check.message


def test_remote_code_is_never_trusted_by_default(model_folder):
    config = json.loads((model_folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    config["model_type"] = "evil"
    config["architectures"] = ["EvilForCausalLM"]
    (model_folder / "config.json").write_text(json.dumps(config))
    (model_folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="ships its own code"):
        load_model(str(model_folder))


def test_bad_dtype_and_device_are_one_line_errors(model_folder):
    with pytest.raises(ModelLoadError) as raised:
        load_model(str(model_folder), dtype="float8")
    assert raised.value.describe(option_name).startswith("--dtype must be one of")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(str(model_folder), device="cuda")
