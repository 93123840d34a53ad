"""Checking a model from its files alone: is it a causal LM, how deep, has it a chat template,
and which causal LMs the local Hugging Face cache holds.

The TUI validates a model as the user types and lists the cache when its picker opens, and
``check`` reports a model before anything is computed: all of it must be instant and work even
where torch is broken. So this module reads config.json and tokenizer_config.json, never
imports torch or transformers, and never touches the network (a hub id that is not cached is
usable, downloaded when the run starts; see :mod:`~layerscope.analysis.models.sources`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerscope.analysis.models.sources import (
    NOT_CACHED,
    WEIGHT_SUFFIXES,
    ModelLoadError,
    ModelNotCached,
    cached_snapshot,
    huggingface_cache_dir,
    resolve_model_spec,
)


@dataclass(frozen=True)
class ModelCheck:
    """What the files of a model folder say, for inline validation."""

    ok: bool
    message: str
    model_type: str | None = None
    num_layers: int | None = None
    has_chat_template: bool = False
    size_bytes: int = 0
    # A hub id not cached yet: usable (ok), it is downloaded when the run starts.
    download: bool = False
    # The error that said the model is not usable, where one did (its settings still marked).
    error: ModelLoadError | None = None

    def refusal(self) -> ModelLoadError:
        """What a use of a model that is not usable raises: the check's own error, if any."""
        return ModelLoadError(self.error.message if self.error is not None else self.message)


def read_config(path: Path) -> dict[str, Any]:
    """The model folder's config.json (OSError or ValueError when it cannot be read as one)."""
    with open(path / "config.json", encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ValueError("config.json is not an object")
    return config


def config_num_layers(config: dict[str, Any]) -> int | None:
    """How many decoder layers a config says the model has (its text model's, for a
    multimodal one), or None where it does not say."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    for source in (config, text or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(source.get(key), int):
                return int(source[key])
    return None


def _is_causal_lm(config: dict[str, Any]) -> bool:
    architectures = config.get("architectures") or []
    if architectures:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    # No architectures recorded (configs saved by hand): trust a known decoder model type.
    from layerscope.analysis.models.targets import ARCHITECTURES

    return config.get("model_type") in ARCHITECTURES


def _weights_size(path: Path) -> int:
    return sum(
        p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )


def folder_has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        with open(path / "tokenizer_config.json", encoding="utf-8") as handle:
            return bool(json.load(handle).get("chat_template"))
    except (OSError, ValueError):
        return False


def inspect_model_path(spec: str, revision: str | None = None, offline: bool = False) -> ModelCheck:
    """Check a model spec from its files alone: folder, config, causal LM, chat template.

    Never touches the network: a hub id that is not cached is ``ok`` with ``download`` set
    (or, when downloads are off, not ok with the one line saying how to get it).
    """
    try:
        source = resolve_model_spec(spec, revision, offline)
    except ModelNotCached as error:
        if error.offline:
            return ModelCheck(False, str(error), error=error)
        return ModelCheck(True, NOT_CACHED, download=True)
    except ModelLoadError as error:
        return ModelCheck(False, str(error), error=error)
    if not (source.path / "config.json").is_file():
        return ModelCheck(False, f"{source.path}: no config.json, not a Hugging Face model folder")
    try:
        config = read_config(source.path)
    except (OSError, ValueError) as error:
        return ModelCheck(False, f"{source.path / 'config.json'}: unreadable ({error})")
    model_type = config.get("model_type")
    if not _is_causal_lm(config):
        architectures = ", ".join(config.get("architectures") or []) or model_type or "unknown"
        return ModelCheck(False, f"{source.path}: not a causal LM ({architectures})", model_type)
    layers = config_num_layers(config)
    size = _weights_size(source.path)
    chat = folder_has_chat_template(source.path)
    described = f"{model_type}, {layers} layers" if layers else str(model_type)
    return ModelCheck(True, described, model_type, layers, chat, size)


def needs_remote_code(path: Path) -> bool:
    """Whether the model ships its own code (``auto_map`` in config.json) for a model type the
    architecture table does not name: loading it would run that code."""
    try:
        config = read_config(path)
    except (OSError, ValueError):
        return False
    from layerscope.analysis.models.targets import ARCHITECTURES

    return bool(config.get("auto_map")) and config.get("model_type") not in ARCHITECTURES


def has_chat_template(spec: str) -> bool:
    return inspect_model_path(spec).has_chat_template


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    model_type: str | None
    num_layers: int | None
    size_bytes: int


def list_cached_models() -> list[CachedModel]:
    """Causal LMs already in the local Hugging Face cache (no network, no torch)."""
    root = huggingface_cache_dir()
    if not root.is_dir():
        return []
    models = []
    for repo in sorted(root.glob("models--*")):
        model_id = repo.name[len("models--") :].replace("--", "/")
        snapshot = cached_snapshot(model_id)
        if snapshot is None:
            continue
        check = inspect_model_path(str(snapshot[0]))
        if check.ok:
            models.append(
                CachedModel(
                    model_id, snapshot[0], check.model_type, check.num_layers, check.size_bytes
                )
            )
    return models
