"""Finding, checking, fingerprinting and loading models.

Everything a user needs before a computation starts (is this folder a causal LM? does it have a
chat template? which models are in the local Hugging Face cache? what is this model's identity
for the cache key?) is answered from the files alone, without importing torch, so the TUI can
validate a path as the user types and the cache can key runs without loading weights. Only
``load_model`` and ``describe_targets`` import torch and transformers.

layerscope never downloads: a model is the built-in ``tiny``, a local folder, or an id already in
the local Hugging Face cache. ``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.errors import one_line
from layerscope.analysis.records import Init, LoadStage, ModuleSet, TargetInfo
from layerscope.analysis.settings import DTYPES

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.targets import Target

TINY = "tiny"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_FINGERPRINT_CHUNK = 1 << 20


class ModelLoadError(ValueError):
    """A model could not be found, checked or loaded; the message is one line for the user."""


def tiny_model_path() -> Path:
    """The built-in model's folder (package data, so it survives a non-editable install)."""
    return Path(str(resources.files("layerscope.samples") / "tiny"))


def huggingface_cache_dir() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: its display name, folder and hub revision (if cached)."""

    name: str
    path: Path
    revision: str | None = None


def _cached_snapshot(model_id: str) -> tuple[Path, str] | None:
    repo = huggingface_cache_dir() / ("models--" + model_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text().strip()
        if (snapshots / revision).is_dir():
            return snapshots / revision, revision
    candidates = sorted(
        (p for p in snapshots.iterdir() if (p / "config.json").exists()),
        key=lambda p: p.stat().st_mtime,
    )
    if candidates:
        return candidates[-1], candidates[-1].name
    return None


def resolve_model_spec(spec: str) -> ModelSource:
    """Turn ``tiny``, a folder or a cached hub id into a folder; never downloads."""
    if spec == TINY:
        return ModelSource(TINY, tiny_model_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {spec!r} is a file, not a model folder")
        return ModelSource(str(path.resolve()), path.resolve())
    snapshot = _cached_snapshot(spec) if spec.count("/") <= 1 and spec else None
    if snapshot is not None:
        return ModelSource(spec, snapshot[0], snapshot[1])
    raise ModelLoadError(
        f"model {spec!r}: no such folder, and not in the local Hugging Face cache "
        f"({huggingface_cache_dir()}); layerscope does not download models"
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


def _read_config(path: Path) -> dict[str, Any]:
    with open(path / "config.json", encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ValueError("config.json is not an object")
    return config


def _num_layers(config: dict[str, Any]) -> int | None:
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
    from layerscope.analysis.targets import ARCHITECTURES

    return config.get("model_type") in ARCHITECTURES


def _weights_size(path: Path) -> int:
    return sum(
        p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
    )


def folder_has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        with open(path / "tokenizer_config.json", encoding="utf-8") as handle:
            return bool(json.load(handle).get("chat_template"))
    except (OSError, ValueError):
        return False


def inspect_model_path(spec: str) -> ModelCheck:
    """Check a model spec from its files alone: folder, config, causal LM, chat template."""
    try:
        source = resolve_model_spec(spec)
    except ModelLoadError as error:
        return ModelCheck(False, str(error))
    if not (source.path / "config.json").is_file():
        return ModelCheck(False, f"{source.path}: no config.json, not a Hugging Face model folder")
    try:
        config = _read_config(source.path)
    except (OSError, ValueError) as error:
        return ModelCheck(False, f"{source.path / 'config.json'}: unreadable ({error})")
    model_type = config.get("model_type")
    if not _is_causal_lm(config):
        architectures = ", ".join(config.get("architectures") or []) or model_type or "unknown"
        return ModelCheck(False, f"{source.path}: not a causal LM ({architectures})", model_type)
    layers = _num_layers(config)
    size = _weights_size(source.path)
    chat = folder_has_chat_template(source.path)
    described = f"{model_type}, {layers} layers" if layers else str(model_type)
    return ModelCheck(True, described, model_type, layers, chat, size)


def _needs_remote_code(path: Path) -> bool:
    try:
        config = _read_config(path)
    except (OSError, ValueError):
        return False
    from layerscope.analysis.targets import ARCHITECTURES

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
        snapshot = _cached_snapshot(model_id)
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


def _file_fingerprint(path: Path) -> str:
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


def model_identity(spec: str) -> dict[str, Any]:
    """The model's identity for cache keys: name, config hash, weights fingerprint (no torch)."""
    check = inspect_model_path(spec)  # "not a model folder" before "config.json unreadable"
    if not check.ok:
        raise ModelLoadError(check.message)
    source = resolve_model_spec(spec)
    try:
        config = _read_config(source.path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{source.path / 'config.json'}: unreadable ({error})") from error
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    weights = {
        p.name: _file_fingerprint(p)
        for p in sorted(source.path.iterdir())
        if p.suffix in _WEIGHT_SUFFIXES and p.is_file()
    }
    weights_hash = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
    return {
        "name": source.name,
        "model_type": config.get("model_type"),
        "revision": source.revision,
        "config_sha256": config_hash,
        "weights_fingerprint": weights_hash,
    }


def _torch_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return getattr(torch, dtype)


def _torch_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"--device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device!r}: CUDA is not available on this machine")
    return resolved


@dataclass
class LoadedModel:
    """A model and tokenizer ready for the engine, with what identifies them."""

    model: Any
    tokenizer: Any
    name: str
    identity: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    num_layers: int
    _targets: dict[str, list[Target]] = field(default_factory=dict, repr=False)

    def target_modules(self, modules: ModuleSet = "attn") -> list[Target]:
        from layerscope.analysis.targets import discover_targets

        if modules not in self._targets:
            self._targets[modules] = discover_targets(self.model, modules)
        return self._targets[modules]

    def targets(self, modules: ModuleSet = "attn") -> list[TargetInfo]:
        return [t.info for t in self.target_modules(modules)]

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


# Files one of which a loadable tokenizer comes from (fast, SentencePiece, BPE, WordPiece).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def _tokenizer_failure(spec: str, folder: Path, error: Exception) -> str:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return (
            f"model {spec!r} has no tokenizer: none of {', '.join(_TOKENIZER_FILES)} in "
            f"{folder}; copy the tokenizer files of the model it was trained from into it"
        )
    return f"model {spec!r}: its tokenizer failed to load: {one_line(error)}"


StageCallback = Callable[[LoadStage], None]


class _WeightProgress:
    """Stands in for transformers' "Loading weights" bar: counts the tensors as they load and
    reports them as :class:`LoadStage` updates instead of drawing into the terminal."""

    def __init__(self, on_stage: StageCallback, iterable: Any, total: int | None) -> None:
        self.on_stage = on_stage
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.n = 0
        self._step = max(1, (self.total or 0) // 100)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int | None = 1) -> None:
        self.n += n or 1
        if self.n % self._step == 0 or self.n == self.total:
            self.on_stage(LoadStage("weights", "loading weights", self.n, self.total))

    def __enter__(self) -> _WeightProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None  # set_description, refresh, close, ...


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


@contextmanager
def _weight_progress(on_stage: StageCallback | None) -> Iterator[None]:
    """Route transformers' own progress bars into ``on_stage`` while loading (transformers 5
    has a tqdm hook; without one, or without a callback, its bars are left as they are)."""
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)
    if on_stage is None or set_hook is None:
        yield
        return

    def hook(_factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _WeightProgress:
        iterable = args[0] if args else kwargs.get("iterable", ())
        return _WeightProgress(on_stage, iterable, kwargs.get("total"))

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def load_model(
    spec: str,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    on_stage: StageCallback | None = None,
    *,
    init: Init = "trained",
    init_seed: int = 0,
) -> LoadedModel:
    """Load a causal LM and its tokenizer through the ordinary transformers path.

    ``on_stage`` hears each step as it begins (tokenizer, weights with their progress, device),
    so that a caller can show what a minutes-long load of a large model is doing.

    ``init="random"`` builds the same architecture from the model's config with freshly
    initialised weights instead (``AutoModelForCausalLM.from_config`` under
    ``torch.manual_seed(init_seed)``, on the CPU so that a seed gives the same weights on every
    machine; the global random state is left as it was): the follow-up paper's baseline.
    """
    tell = on_stage or (lambda _stage: None)
    check = inspect_model_path(spec)
    if not check.ok:
        raise ModelLoadError(check.message)
    source = resolve_model_spec(spec)
    identity = model_identity(spec)
    torch_device = _torch_device(device)
    torch_dtype = _torch_dtype(dtype, torch_device)
    if not trust_remote_code and _needs_remote_code(source.path):
        raise ModelLoadError(
            f"model {spec!r} ships its own code (auto_map in config.json); layerscope runs it "
            "only when asked to trust remote code (--trust-remote-code)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tell(LoadStage("tokenizer", "loading the tokenizer"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers' message lists files; say what is missing
        raise ModelLoadError(_tokenizer_failure(spec, source.path, error)) from error
    try:
        if init == "random":
            tell(LoadStage("weights", f"initialising random weights (seed {init_seed})"))
            model: Any = _random_model(source.path, torch_dtype, init_seed, trust_remote_code)
        else:
            tell(LoadStage("weights", "loading weights"))
            with _weight_progress(on_stage):
                model = AutoModelForCausalLM.from_pretrained(
                    source.path, dtype=torch_dtype, trust_remote_code=trust_remote_code
                )
    except Exception as error:  # any loader failure becomes one line for the user
        raise ModelLoadError(f"model {spec!r} failed to load: {one_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tell(LoadStage("device", f"moving the model to {torch_device}"))
    model.to(torch_device)
    model.eval()
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        identity=identity,
        device=torch_device,
        dtype=torch_dtype,
        num_layers=check.num_layers or 0,
    )
    return loaded


def _random_model(path: Path, dtype: torch.dtype, seed: int, trust_remote_code: bool) -> Any:
    """The architecture of the model at ``path``, freshly initialised under ``seed``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )


def loaded_from_objects(model: Any, tokenizer: Any, name: str = "in-memory") -> LoadedModel:
    """Wrap a model built in memory (tests, notebooks) so the engine can use it."""
    import torch

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval()
    parameter = next(model.parameters())
    config = model.config.to_dict()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        identity={
            "name": name,
            "model_type": config.get("model_type"),
            "config_sha256": hashlib.sha256(
                json.dumps(config, sort_keys=True, default=str).encode()
            ).hexdigest(),
        },
        device=parameter.device if isinstance(parameter, torch.Tensor) else torch.device("cpu"),
        dtype=parameter.dtype,
        num_layers=_num_layers(config) or 0,
    )


def describe_targets(
    spec: str, modules: ModuleSet = "attn", trust_remote_code: bool = False
) -> list[TargetInfo]:
    """The target matrices and their shapes, from the config alone (weights never loaded)."""
    check = inspect_model_path(spec)
    if not check.ok:
        raise ModelLoadError(check.message)
    source = resolve_model_spec(spec)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from layerscope.analysis.targets import discover_targets

    config = AutoConfig.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [t.info for t in discover_targets(model, modules)]
