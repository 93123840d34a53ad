"""A model's config checked against its weights' shapes, read from the safetensors headers.

Why before building the model: transformers builds whatever the config describes before it
reads a weight. A config that says 10,000,000 layers (a typo, a corrupted download, a file
edited by hand) made ``compute`` sit in "loading weights" for minutes while it grew past 6 GB,
and ``describe`` print nothing for as long. A safetensors file starts with a JSON header of
every tensor's name and shape (a few kilobytes, read without loading anything), so the depth
and width the weights hold can be compared with the config's first, and a mismatch is one line
naming config.json and the field. Weights in another format (``.bin``) are not checked here.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from layerscope.analysis.models.sources import ModelLoadError

__all__ = ["check_config_against_weights", "weight_shapes"]

# A transformer block's index in a parameter name: model.layers.3., transformer.h.3., ...
_BLOCK = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")
# A header larger than this is not a safetensors header (the format caps it at 100 MB).
_HEADER_LIMIT = 100_000_000
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")


def _header(path: Path) -> dict[str, Any] | None:
    """The file's safetensors header; None when it cannot be read as one (a truncated or
    foreign file is the loader's to report, with what it knows of the file)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > _HEADER_LIMIT:
                return None
            header = json.loads(handle.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def weight_shapes(folder: Path) -> Iterator[tuple[str, list[int], Path]]:
    """Every tensor's name and shape in the folder's safetensors files (none: no such files)."""
    for path in sorted(folder.glob("*.safetensors")):
        for name, entry in (_header(path) or {}).items():
            if name != "__metadata__" and isinstance(entry, dict):
                shape = entry.get("shape")
                if isinstance(shape, list):
                    yield name, shape, path


def _configured(config: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for key in keys:
        if key in config:
            return key, config[key]
    return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config_against_weights(folder: Path, config: dict[str, Any]) -> None:
    """Refuse a config whose depth or width is not a positive whole number, or that asks for
    more layers than the weights in ``folder`` hold: one line naming config.json, the field,
    its value and what the weights say. (More layers in the weights than in the config is
    left alone: some models keep extra blocks, such as a multi-token-prediction head. The
    width is not compared with the embedding's: some models project their embeddings.)"""
    where = folder / "config.json"
    depth = _configured(config, _DEPTH_KEYS)
    for field in (depth, _configured(config, _WIDTH_KEYS)):
        if field is not None and not _positive_int(field[1]):
            key, value = field
            raise ModelLoadError(f"{where}: {key} is {value!r}; it must be a positive whole number")
    if depth is None:
        return
    blocks = {
        int(block.group(1))
        for name, _shape, _path in weight_shapes(folder)
        if (block := _BLOCK.search(name)) is not None
    }
    key, value = depth
    if blocks and value > max(blocks) + 1:
        raise ModelLoadError(
            f"{where}: {key} is {value}, but the weights hold {max(blocks) + 1} layers (layers "
            f"0-{max(blocks)}): the config does not describe these weights"
        )
