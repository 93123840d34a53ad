"""PEFT adapters (LoRA and the other kinds ``peft`` loads) measured as part of the model.

Why merged: the statistics are of the gradient with respect to each attention projection's
weight. An adapted projection computes ``W x + B A x`` (scaled); merging writes ``W + s B A``
into the projection's own weight, so the model is again plain Linear layers, the gradient with
respect to that weight is the adapted model's gradient at the same point, and every route of the
engine (the fast factored one, streaming, device maps) applies unchanged. Unmerged, the
projection would be a wrapper whose weight is the frozen base, and its gradient would not be the
adapted model's.

Why the adapter is part of the model's identity: it changes every number, so its fingerprint
(its config and its weights, fingerprinted as a model's are) enters the run key, and runs list
the model as ``base+adapter``. The ``peft`` library is an optional extra
(``layerscope[adapters]``), imported only when an adapter is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from layerscope.analysis.base.errors import mention
from layerscope.analysis.models.sources import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
ADAPTERS_EXTRA = "pip install 'layerscope[adapters]'"

__all__ = ["ADAPTER_CONFIG", "adapter_folder", "adapter_identity", "apply_adapter"]


def adapter_folder(path: str | Path) -> Path:
    """The adapter's folder, checked: it holds an adapter config and weights (no torch)."""
    folder = Path(path).expanduser()
    where = f"{mention('adapter')} {str(path)!r}"
    if not folder.exists():
        raise ModelLoadError(f"{where}: no such folder")
    if not folder.is_dir():
        raise ModelLoadError(
            f"{where}: not a folder (an adapter is a folder with {ADAPTER_CONFIG})"
        )
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"{where}: no {ADAPTER_CONFIG} in it (not a PEFT adapter folder)")
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelLoadError(f"{where}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    return folder.absolute()


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder / ADAPTER_CONFIG}: unreadable ({error})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / ADAPTER_CONFIG}: not a JSON object")
    return config


def adapter_identity(path: str | Path, fingerprint: Any) -> dict[str, Any]:
    """What identifies the adapter in a run's key: its name, kind, config hash and weights
    fingerprint (``fingerprint`` fingerprints one weights file, as the model's are)."""
    folder = adapter_folder(path)
    config = _config(folder)
    weights = {
        name: fingerprint(folder / name) for name in ADAPTER_WEIGHTS if (folder / name).is_file()
    }
    encoded = json.dumps(config, sort_keys=True).encode()
    return {
        "name": folder.name,
        "peft_type": config.get("peft_type"),
        "config_sha256": hashlib.sha256(encoded).hexdigest(),
        "weights_fingerprint": hashlib.sha256(
            json.dumps(weights, sort_keys=True).encode()
        ).hexdigest(),
    }


def apply_adapter(model: Any, path: str | Path) -> Any:
    """``model`` with the adapter at ``path`` loaded and merged into its weights."""
    folder = adapter_folder(path)
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(
            f"{mention('adapter')} needs the peft library: {ADAPTERS_EXTRA}"
        ) from None
    try:
        adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        merged = adapted.merge_and_unload()
    except Exception as error:  # peft's own types: a mismatched base model, a damaged file
        text = " ".join(str(error).split()) or type(error).__name__
        raise ModelLoadError(
            f"{mention('adapter')} {str(path)!r} does not load onto this model: {text[:300]}"
        ) from error
    return merged
