"""Where a loaded model goes: the device named, or its layers spread by a device map.

Large models can be spread over GPUs, the CPU and disk with a device map (accelerate, as
``from_pretrained`` takes it); the model is then never moved as a whole, and the device input
ids go to is the input embeddings'. Loading decides *what* is loaded; this module owns where it
lives: the device a setting names, the temporary folder layers are offloaded to (removed with
the model), the input device under a map, and the dispatch of a freshly initialised model
(which has nothing on disk to offload).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import mention
from layerscope.analysis.models.sources import ModelLoadError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """The torch device the device setting names (auto: CUDA where there is one, else the
    CPU); ModelLoadError for one torch does not know or this machine does not have."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"{mention('device')} {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"{mention('device')} {device!r}: CUDA is not available on this machine"
        )
    return resolved


def offload_folder() -> Path:
    """Where accelerate may offload layers to disk: a fresh folder under the results cache's
    folder (same disk as the user chose for data), removed when the model is released."""
    import tempfile

    from layerscope.analysis.base.locations import default_db_path

    root = Path(default_db_path()).parent / "offload"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="layerscope-", dir=root))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="layerscope-offload-"))


def mapped_input_device(model: Any) -> torch.device:
    """Where input ids go under a device map: the input embeddings' device (disk and meta
    offload execute on the CPU)."""
    import torch

    device_map: dict[str, Any] = getattr(model, "hf_device_map", None) or {}
    embeddings = model.get_input_embeddings()
    name = next((n for n, m in model.named_modules() if m is embeddings), "")
    placed: Any = None
    for key in sorted(device_map, key=len, reverse=True):
        if key == "" or name == key or name.startswith(key + "."):
            placed = device_map[key]
            break
    if placed is None:
        placed = embeddings.weight.device
    if isinstance(placed, int):
        return torch.device("cuda", placed)
    device = torch.device(placed) if placed != "disk" else torch.device("cpu")
    return torch.device("cpu") if device.type == "meta" else device


def remove_offload(folder: Path | None) -> None:
    """Remove an offload folder and the layers in it (nothing when there is none)."""
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def dispatch_random(
    model: Any, device_map: str | dict[str, Any], max_memory: dict[int | str, int | str] | None
) -> Any:
    """A freshly initialised model spread as ``from_pretrained`` would spread it (accelerate:
    no disk offload here, the weights exist only in memory)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    from layerscope.analysis.compat.transformers import no_split_modules

    if isinstance(device_map, str):
        no_split = no_split_modules(model)
        memory = max_memory
        if device_map != "sequential":
            memory = get_balanced_memory(
                model, max_memory=max_memory, no_split_module_classes=no_split
            )
        device_map = dict(
            infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
        )
    assert isinstance(device_map, dict)
    if "disk" in device_map.values():
        raise ModelLoadError(
            f"{mention('init')} random with a device map: the random model does not fit the "
            f"devices ({mention('max_memory')}) and cannot be offloaded to disk"
        )
    return dispatch_model(model, device_map=device_map)
