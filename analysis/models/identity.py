"""A model's identity for the cache key: name, config hash, weights fingerprint, hub commit.

A run is found again in the cache by its key, so the identity must be computed before anything
is loaded, and cheaply: from the files alone (no torch, no network), without reading all of a
multi-GB weights file. A hub model's identity holds the resolved commit of its snapshot, so
``main`` moving on makes new runs, not mixed ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from layerscope.analysis.models.adapters import adapter_identity
from layerscope.analysis.models.inspection import inspect_model_path, read_config
from layerscope.analysis.models.sources import (
    WEIGHT_SUFFIXES,
    ModelLoadError,
    resolve_model_spec,
)

_FINGERPRINT_CHUNK = 1 << 20


def file_fingerprint(path: Path) -> str:
    """A fingerprint of a weights file that does not read all of a multi-GB file.

    Files in the Hugging Face cache are links to blobs named by their content hash, which is
    used directly. Other files: size plus the SHA-256 of their first, middle and last MiB, which
    covers safetensors' header (names, shapes, dtypes) and samples the data; files up to 64 MiB
    are hashed whole.
    """
    if path.is_symlink():
        target = Path(os.readlink(path))
        if target.parent.name == "blobs":
            return f"blob:{target.name}"
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= 64 * _FINGERPRINT_CHUNK:
            digest.update(handle.read())
        else:
            for offset in (0, size // 2, size - _FINGERPRINT_CHUNK):
                handle.seek(offset)
                digest.update(handle.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()


def model_identity(
    spec: str, revision: str | None = None, offline: bool = False, adapter: str | None = None
) -> dict[str, Any]:
    """The model's identity for cache keys: name, config hash, weights fingerprint and, for a
    hub model, the commit of its snapshot (no torch, no network: a hub id that is not cached
    raises ModelNotCached). With an ``adapter`` (a PEFT adapter folder) the adapter's identity
    is part of it and the name is ``base+adapter``; without, it is what it always was."""
    check = inspect_model_path(spec, revision, offline)  # "not a model folder" first
    if not check.ok:
        raise check.refusal()
    source = resolve_model_spec(spec, revision, offline)
    try:
        config = read_config(source.path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{source.path / 'config.json'}: unreadable ({error})") from error
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    weights = {
        p.name: file_fingerprint(p)
        for p in sorted(source.path.iterdir())
        if p.suffix in WEIGHT_SUFFIXES and p.is_file()
    }
    weights_hash = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
    identity: dict[str, Any] = {
        "name": source.name,
        "model_type": config.get("model_type"),
        "revision": source.revision,
        "config_sha256": config_hash,
        "weights_fingerprint": weights_hash,
    }
    if adapter is not None:
        identity["adapter"] = adapter_identity(adapter, file_fingerprint)
        identity["name"] = f"{source.name}+{identity['adapter']['name']}"
    return identity
