"""Which weight matrices are measured, found per architecture by name, never by shape guesses.

A gradient statistic is only meaningful if "q of layer 7" really is the query projection of layer
7. Shapes cannot tell q from o in a square model, nor where q ends inside GPT-2's fused
``c_attn``. So each supported architecture names its layer list and its projections here, and
fused projections say how their output features split into q, k and v (contiguous for GPT-2 and
Phi-3, interleaved per head for GPT-NeoX). Architectures not in the table are accepted when their
layers use the common ``q_proj``/``k_proj``/``v_proj``/``o_proj`` names; anything else is refused
with the module names that were found, so the user can see why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from layerscope.analysis.base.errors import LayerscopeError
from layerscope.analysis.base.records import (
    ATTENTION_PROJECTIONS,
    MLP_PROJECTIONS,
    ModuleSet,
    TargetInfo,
)
from layerscope.analysis.base.setting_schema import SettingError
from layerscope.analysis.base.settings import setting

if TYPE_CHECKING:
    import torch
    from torch import nn


class UnsupportedArchitectureError(LayerscopeError, ValueError):
    """The model's layers do not match any architecture layerscope knows how to measure."""


FusedLayout = Literal["contiguous", "per_head"]


@dataclass(frozen=True)
class FusedProjection:
    """One module whose output features hold several projections side by side."""

    path: str  # relative to the layer
    parts: tuple[str, ...]  # projection names in output order
    layout: FusedLayout = "contiguous"


@dataclass(frozen=True)
class ArchitectureSpec:
    layers: str  # dotted path from the model to the list of decoder layers
    projections: dict[str, str]  # projection name -> dotted path inside a layer
    fused: tuple[FusedProjection, ...] = ()


_LLAMA_LIKE = ArchitectureSpec(
    layers="model.layers",
    projections={
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    },
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo",
            "olmo2",
            "granite",
            "smollm3",
        )
    },
    "gpt2": ArchitectureSpec(
        layers="transformer.h",
        projections={"o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"},
        fused=(FusedProjection("attn.c_attn", ("q", "k", "v")),),
    ),
    "gpt_neox": ArchitectureSpec(
        layers="gpt_neox.layers",
        projections={
            "o": "attention.dense",
            "up": "mlp.dense_h_to_4h",
            "down": "mlp.dense_4h_to_h",
        },
        fused=(FusedProjection("attention.query_key_value", ("q", "k", "v"), "per_head"),),
    ),
    "phi3": ArchitectureSpec(
        layers="model.layers",
        projections={"o": "self_attn.o_proj", "down": "mlp.down_proj"},
        fused=(
            FusedProjection("self_attn.qkv_proj", ("q", "k", "v")),
            FusedProjection("mlp.gate_up_proj", ("gate", "up")),
        ),
    ),
}

_COMMON_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


@dataclass(frozen=True)
class Target:
    """A measured matrix bound to the module that computes it.

    ``output_features`` selects this projection's output features from the module's output
    (None: all of them). ``transposed`` is true for GPT-2's Conv1D, whose weight is stored
    in-by-out; statistics are always reported for the out-by-in orientation.
    """

    info: TargetInfo
    module: nn.Module
    output_features: torch.Tensor | None
    transposed: bool


def projections_for(modules: ModuleSet) -> tuple[str, ...]:
    if modules == "attn":
        return ATTENTION_PROJECTIONS
    if modules == "mlp":
        return MLP_PROJECTIONS
    if modules == "all":
        return ATTENTION_PROJECTIONS + MLP_PROJECTIONS
    raise SettingError(setting("modules"), f"must be attn, mlp or all, not {modules!r}")


def _get_path(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_matrix_module(module: Any) -> bool:
    weight = getattr(module, "weight", None)
    return weight is not None and getattr(weight, "ndim", 0) == 2


def _find_spec(model: Any) -> ArchitectureSpec:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    # Unknown type: accept the common Llama-style names, found by name inside real layers.
    for layers_path in _COMMON_LAYER_PATHS:
        layers = _get_path(model, layers_path)
        if layers is None or len(layers) == 0:
            continue
        for attn_name in ("self_attn", "attn", "attention"):
            names = {p: f"{attn_name}.{p}_proj" for p in ATTENTION_PROJECTIONS}
            if all(_is_matrix_module(_get_path(layers[0], path)) for path in names.values()):
                mlp = {p: f"mlp.{p}_proj" for p in MLP_PROJECTIONS}
                return ArchitectureSpec(layers=layers_path, projections={**names, **mlp})
    found = _describe_modules(model)
    raise UnsupportedArchitectureError(
        f"unsupported architecture {model_type!r}: no known attention projections; "
        f"matrix modules in its first layer: {found}"
    )


def _describe_modules(model: Any) -> str:
    for layers_path in _COMMON_LAYER_PATHS:
        layers = _get_path(model, layers_path)
        if layers is not None and len(layers) > 0:
            names = [n for n, m in layers[0].named_modules() if n and _is_matrix_module(m)]
            return f"{layers_path}.0: " + ", ".join(names or ["none"])
    names = [n for n, m in model.named_modules() if n and _is_matrix_module(m)][:12]
    return ", ".join(names or ["none"])


def _fused_part_indices(
    model: Any, fused: FusedProjection, out_features: int
) -> dict[str, list[int]]:
    """Output-feature indices of each part of a fused projection."""
    config = model.config
    if fused.parts == ("gate", "up"):
        half = out_features // 2
        return {"gate": list(range(half)), "up": list(range(half, out_features))}
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    if fused.layout == "per_head":
        # GPT-NeoX: the output is viewed as (heads, 3 * head_dim): per head q, then k, then v.
        if out_features != 3 * heads * head_dim:
            raise UnsupportedArchitectureError(
                f"{fused.path}: {out_features} output features, expected 3 x {heads} x {head_dim}"
            )
        parts: dict[str, list[int]] = {p: [] for p in fused.parts}
        for head in range(heads):
            base = head * 3 * head_dim
            for i, name in enumerate(fused.parts):
                parts[name].extend(range(base + i * head_dim, base + (i + 1) * head_dim))
        return parts
    sizes = {"q": heads * head_dim, "k": kv_heads * head_dim, "v": kv_heads * head_dim}
    if sum(sizes[p] for p in fused.parts) != out_features:
        raise UnsupportedArchitectureError(
            f"{fused.path}: {out_features} output features do not split into "
            + ", ".join(f"{p}={sizes[p]}" for p in fused.parts)
        )
    parts = {}
    start = 0
    for name in fused.parts:
        parts[name] = list(range(start, start + sizes[name]))
        start += sizes[name]
    return parts


def _matrix_shape(module: Any) -> tuple[int, int, bool]:
    """(out_features, in_features, transposed) of a Linear or GPT-2 Conv1D module."""
    weight = module.weight
    if type(module).__name__ == "Conv1D":
        return int(weight.shape[1]), int(weight.shape[0]), True
    return int(weight.shape[0]), int(weight.shape[1]), False


def discover_targets(model: Any, modules: ModuleSet = "attn") -> list[Target]:
    """The measured matrices of ``model``, ordered by layer, then q, k, v, o, gate, up, down."""
    import torch

    wanted = projections_for(modules)
    spec = _find_spec(model)
    layers = _get_path(model, spec.layers)
    if layers is None:
        raise UnsupportedArchitectureError(
            f"{model.config.model_type}: no layer list at {spec.layers}; found {_describe_modules(model)}"
        )
    prefix = _parameter_prefix(model, spec.layers)
    targets: list[Target] = []
    for layer_index, layer in enumerate(layers):
        found: dict[str, Target] = {}
        for projection, path in spec.projections.items():
            if projection not in wanted:
                continue
            module = _get_path(layer, path)
            if not _is_matrix_module(module):
                raise UnsupportedArchitectureError(
                    f"layer {layer_index}: no matrix module at {path}; found "
                    f"{_describe_modules(model)}"
                )
            rows, cols, transposed = _matrix_shape(module)
            info = TargetInfo(
                layer_index, projection, f"{prefix}{layer_index}.{path}.weight", rows, cols
            )
            found[projection] = Target(info, module, None, transposed)
        for fused in spec.fused:
            if not set(fused.parts) & set(wanted):
                continue
            module = _get_path(layer, fused.path)
            if not _is_matrix_module(module):
                raise UnsupportedArchitectureError(
                    f"layer {layer_index}: no fused module at {fused.path}; found "
                    f"{_describe_modules(model)}"
                )
            out_features, cols, transposed = _matrix_shape(module)
            for projection, indices in _fused_part_indices(model, fused, out_features).items():
                if projection not in wanted:
                    continue
                info = TargetInfo(
                    layer_index,
                    projection,
                    f"{prefix}{layer_index}.{fused.path}.weight[{projection}]",
                    len(indices),
                    cols,
                )
                index = torch.tensor(indices, dtype=torch.long)
                found[projection] = Target(info, module, index, transposed)
        targets.extend(found[p] for p in wanted if p in found)
    if not targets:
        raise UnsupportedArchitectureError(
            f"no {modules} matrices found; found {_describe_modules(model)}"
        )
    return targets


def _parameter_prefix(model: Any, layers_path: str) -> str:
    """The parameter-name prefix of the layer list, e.g. ``model.layers.``."""
    layers = _get_path(model, layers_path)
    for name, module in model.named_modules():
        if module is layers:
            return f"{name}." if name else ""
    return f"{layers_path}."
