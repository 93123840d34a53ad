"""Finding, checking, fingerprinting and loading models.

Everything a user needs before a computation starts (is this folder a causal LM? does it have a
chat template? which models are in the local Hugging Face cache? what is this model's identity
for the cache key?) is answered from the files alone, without importing torch, so the TUI can
validate a path as the user types and the cache can key runs without loading weights. Only
``load_model`` and ``describe_targets`` import torch and transformers.

A model is the built-in ``tiny``, a local folder, or a hub id. Checking, listing and keying
never touch the network: a hub id is looked up in the local Hugging Face cache (at ``revision``,
default ``main``), and one that is not there is reported as "will be downloaded when the run
starts". Only :func:`ensure_model_available` (called when a run starts, and by ``load_model``)
downloads, through huggingface_hub with its progress routed to the stage hook, and not at all
when offline (``--offline`` or ``HF_HUB_OFFLINE=1``): then one line says how to get the model.
A run's key holds the resolved commit, so ``main`` moving on makes new runs, not mixed ones.
``trust_remote_code`` stays off unless the caller asks for it.

Large models can be spread over GPUs, the CPU and disk with a device map (accelerate, as
``from_pretrained`` takes it); the model is then never moved as a whole, and
:attr:`LoadedModel.device` is where input ids go (the input embeddings' device).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.errors import LayerscopeError, mention, one_line
from layerscope.analysis.base.records import Init, LoadStage, ModuleSet, TargetInfo
from layerscope.analysis.base.settings import DTYPES

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.models.targets import Target

TINY = "tiny"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_FINGERPRINT_CHUNK = 1 << 20


class ModelLoadError(LayerscopeError, ValueError):
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


NOT_CACHED = "not cached: will be downloaded when the run starts"


class ModelNotCached(ModelLoadError):
    """A hub id that is not in the local cache (at the asked revision): downloadable unless
    offline, and the message says which."""

    def __init__(self, model_id: str, revision: str | None, offline: bool) -> None:
        self.model_id = model_id
        self.revision = revision
        self.offline = offline
        at = f" at revision {revision!r}" if revision else ""
        if offline:
            get = f"hf download {model_id}" + (f" --revision {revision}" if revision else "")
            offline_setting = mention("offline")
            message = (
                f"model {model_id!r}{at} is not in the local Hugging Face cache "
                f"({huggingface_cache_dir()}) and downloads are off ({offline_setting} or "
                f"HF_HUB_OFFLINE=1); get it with `{get}`, or run without {offline_setting}"
            )
        else:
            message = f"model {model_id!r}{at}: {NOT_CACHED}"
        super().__init__(message)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(spec: str) -> bool:
    """``org/name`` or ``name`` as the hub spells ids (not a path: no leading ./ ~ or /)."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec and not spec.endswith(".")


def hub_offline(offline: bool = False) -> bool:
    """Whether downloads are off: ``--offline``, or ``HF_HUB_OFFLINE`` set as huggingface_hub
    reads it."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return offline or flag in ("1", "true", "yes", "on")


def _snapshot_complete(folder: Path) -> bool:
    """A snapshot a run can use: its config and all its weights (an interrupted download
    leaves the files it finished linked in the snapshot, and must be resumed, not used)."""
    if not (folder / "config.json").is_file():
        return False
    for index in folder.glob("*.index.json"):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = set(json.load(handle).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return False
        if not all((folder / shard).is_file() for shard in shards):
            return False
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file())


def _cached_snapshot(model_id: str, revision: str | None = None) -> tuple[Path, str] | None:
    """The complete cached snapshot of ``model_id`` at ``revision`` (a branch, tag or commit;
    default main) and its commit, from the cache's refs and snapshots alone."""
    repo = huggingface_cache_dir() / ("models--" + model_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = revision or "main"
    ref = repo / "refs" / wanted
    commit = ref.read_text().strip() if ref.is_file() else wanted
    if commit and "/" not in commit and _snapshot_complete(snapshots / commit):
        return snapshots / commit, commit
    if revision is not None or (repo / "refs").is_dir():
        return None  # main (or the revision asked for) was never fetched
    # No refs at all (a cache copied by hand): the newest complete snapshot.
    candidates = sorted(
        (p for p in snapshots.iterdir() if _snapshot_complete(p)),
        key=lambda p: p.stat().st_mtime,
    )
    if candidates:
        return candidates[-1], candidates[-1].name
    return None


def resolve_model_spec(
    spec: str, revision: str | None = None, offline: bool = False
) -> ModelSource:
    """Turn ``tiny``, a folder or a cached hub id into a folder; never downloads.

    A hub id that is not cached raises :class:`ModelNotCached` (its message depends on whether
    downloads are off); ``revision`` applies to hub ids only.
    """
    if spec == TINY or (path := Path(spec).expanduser()).exists():
        if revision:
            raise ModelLoadError(
                f"{mention('revision')} {revision}: model {spec!r} is a local folder, not a hub id"
            )
        if spec == TINY:
            return ModelSource(TINY, tiny_model_path())
        if not path.is_dir():
            raise ModelLoadError(f"model {spec!r} is a file, not a model folder")
        return ModelSource(str(path.resolve()), path.resolve())
    if spec and is_hub_id(spec):
        snapshot = _cached_snapshot(spec, revision)
        if snapshot is not None:
            return ModelSource(spec, snapshot[0], snapshot[1])
        raise ModelNotCached(spec, revision, hub_offline(offline))
    raise ModelLoadError(
        f"model {spec!r}: no such folder, and not in the local Hugging Face cache "
        f"({huggingface_cache_dir()}); not a hub id either (org/name)"
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
    from layerscope.analysis.models.targets import ARCHITECTURES

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
    from layerscope.analysis.models.targets import ARCHITECTURES

    return bool(config.get("auto_map")) and config.get("model_type") not in ARCHITECTURES


class _StageProgress:
    """A tqdm class for huggingface_hub's download bars that reports them as ``download``
    stages instead of drawing into the terminal (built on the fly: tqdm is imported lazily)."""

    @staticmethod
    def make(on_stage: StageCallback, name: str) -> type[Any]:
        from tqdm.auto import tqdm

        class StageTqdm(tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)
                kwargs["disable"] = False
                kwargs["file"] = _NullWriter()
                super().__init__(*args, **kwargs)

            def display(self, msg: str | None = None, pos: int | None = None) -> bool:
                total = int(self.total) if self.total else None
                what = self.desc.strip(": ") or "files"
                on_stage(LoadStage("download", f"downloading {name}: {what}", int(self.n), total))
                return True

        return StageTqdm


class _NullWriter:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _download_failure(model_id: str, revision: str | None, error: Exception) -> str:
    from huggingface_hub import errors

    at = f" at revision {revision!r}" if revision else ""
    if isinstance(error, errors.RevisionNotFoundError):
        return f"model {model_id!r}: the hub has no revision {revision!r} ({mention('revision')})"
    if isinstance(error, errors.GatedRepoError):
        return (
            f"model {model_id!r} is gated on the hub: accept its terms on the model's page and "
            "log in (hf auth login), then run again"
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return (
            f"model {model_id!r}: no such model on the hub (check the id; a private model "
            "needs hf auth login)"
        )
    return (
        f"model {model_id!r}{at}: the download failed ({one_line(error)}); run again to resume "
        f"it, or {mention('offline')} to use only the local cache"
    )


def ensure_model_available(
    spec: str,
    revision: str | None = None,
    offline: bool = False,
    on_stage: StageCallback | None = None,
) -> ModelSource:
    """The model's folder, downloading a hub id that is not cached (unless offline).

    huggingface_hub fetches the snapshot into the local cache (resuming an interrupted
    download), its progress bars reported to ``on_stage`` as ``download`` stages. Raises
    ModelLoadError with one line for a wrong id or revision, a failed download, or, offline,
    a model that is not cached.
    """
    try:
        return resolve_model_spec(spec, revision, offline)
    except ModelNotCached as missing:
        if missing.offline:
            raise
    from huggingface_hub import snapshot_download

    if on_stage is not None:
        on_stage(LoadStage("download", f"downloading {spec} from the Hugging Face hub"))
    progress = _StageProgress.make(on_stage, spec) if on_stage is not None else None
    try:
        folder = Path(
            snapshot_download(
                spec,
                revision=revision,
                cache_dir=huggingface_cache_dir(),  # the cache the checks read, read now
                tqdm_class=progress,
            )
        )
    except Exception as error:  # network, hub and disk failures: one line for the user
        raise ModelLoadError(_download_failure(spec, revision, error)) from error
    snapshot = _cached_snapshot(spec, revision) or _cached_snapshot(spec, folder.name)
    if snapshot is None:
        if not _snapshot_complete(folder):
            raise ModelLoadError(
                f"model {spec!r}: the download finished without a config.json and weights "
                f"in {folder}; is it a causal LM repository?"
            )
        snapshot = (folder, folder.name)
    return ModelSource(spec, snapshot[0], snapshot[1])


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


def model_identity(spec: str, revision: str | None = None, offline: bool = False) -> dict[str, Any]:
    """The model's identity for cache keys: name, config hash, weights fingerprint and, for a
    hub model, the commit of its snapshot (no torch, no network: a hub id that is not cached
    raises ModelNotCached)."""
    check = inspect_model_path(spec, revision, offline)  # "not a model folder" first
    if not check.ok:
        raise check.refusal()
    source = resolve_model_spec(spec, revision, offline)
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
        raise ModelLoadError(
            f"{mention('dtype')} must be one of {', '.join(DTYPES)}, not {dtype!r}"
        )
    return getattr(torch, dtype)


def _torch_device(device: str) -> torch.device:
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
        from layerscope.analysis.models.targets import discover_targets

        if modules not in self._targets:
            self._targets[modules] = discover_targets(self.model, modules)
        return self._targets[modules]

    def targets(self, modules: ModuleSet = "attn") -> list[TargetInfo]:
        return [t.info for t in self.target_modules(modules)]

    @property
    def offloaded_to_disk(self) -> bool:
        """Whether a device map put some layers on disk (their weights load per forward)."""
        return "disk" in (getattr(self.model, "hf_device_map", None) or {}).values()

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


def _offload_folder() -> Path:
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


def _input_device(model: Any) -> torch.device:
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


def load_model(
    spec: str,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    on_stage: StageCallback | None = None,
    *,
    init: Init = "trained",
    init_seed: int = 0,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    revision: str | None = None,
    offline: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer through the ordinary transformers path.

    ``on_stage`` hears each step as it begins (download, tokenizer, weights with their
    progress, device), so that a caller can show what a minutes-long load of a large model is
    doing. A hub id that is not cached is downloaded first (see :func:`ensure_model_available`).

    ``device_map`` ("auto", "balanced", "sequential", or accelerate's dict; None or "none": the
    whole model on ``device``) spreads the layers as ``from_pretrained`` does, within
    ``max_memory``; layers that fit nowhere are offloaded to a temporary folder (removed with
    the model). The model is then not moved, and ``LoadedModel.device`` is the input device.

    ``init="random"`` builds the same architecture from the model's config with freshly
    initialised weights instead (``AutoModelForCausalLM.from_config`` under
    ``torch.manual_seed(init_seed)``, on the CPU so that a seed gives the same weights on every
    machine; the global random state is left as it was): the follow-up paper's baseline.
    """
    tell = on_stage or (lambda _stage: None)
    if device_map == "none":
        device_map = None
    if max_memory is not None and device_map is None:
        raise ModelLoadError(
            f"{mention('max_memory')} needs a device map ({mention('device_map')} auto, ...)"
        )
    source = ensure_model_available(spec, revision, offline, on_stage)
    check = inspect_model_path(spec, revision, offline)
    if not check.ok:
        raise check.refusal()
    identity = model_identity(spec, revision, offline)
    torch_device = _torch_device(device)
    torch_dtype = _torch_dtype(dtype, torch_device)
    if not trust_remote_code and _needs_remote_code(source.path):
        raise ModelLoadError(
            f"model {spec!r} ships its own code (auto_map in config.json); layerscope runs it "
            f"only when asked to trust remote code ({mention('trust_remote_code')})"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tell(LoadStage("tokenizer", "loading the tokenizer"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers' message lists files; say what is missing
        raise ModelLoadError(_tokenizer_failure(spec, source.path, error)) from error
    offload: Path | None = None
    try:
        if init == "random":
            tell(LoadStage("weights", f"initialising random weights (seed {init_seed})"))
            model: Any = _random_model(source.path, torch_dtype, init_seed, trust_remote_code)
            if device_map is not None:
                model = _dispatch_random(model, device_map, max_memory)
        else:
            placement: dict[str, Any] = {}
            if device_map is not None:
                offload = _offload_folder()
                placement = {
                    "device_map": device_map,
                    "max_memory": max_memory,
                    "offload_folder": str(offload),
                }
            spread = f", spread by device map {device_map}" if device_map is not None else ""
            tell(LoadStage("weights", f"loading weights{spread}"))
            with _weight_progress(on_stage):
                model = AutoModelForCausalLM.from_pretrained(
                    source.path,
                    dtype=torch_dtype,
                    trust_remote_code=trust_remote_code,
                    **placement,
                )
    except Exception as error:  # any loader failure becomes one line for the user
        _remove(offload)
        raise ModelLoadError(f"model {spec!r} failed to load: {one_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if device_map is None:
        tell(LoadStage("device", f"moving the model to {torch_device}"))
        model.to(torch_device)
        input_device = torch_device
    else:
        input_device = _input_device(model)
        placed = sorted({str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()})
        tell(LoadStage("device", f"layers placed on {', '.join(placed) or input_device}"))
    if offload is not None:
        import weakref

        weakref.finalize(model, _remove, offload)  # the offloaded layers go with the model
    model.eval()
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        identity=identity,
        device=input_device,
        dtype=torch_dtype,
        num_layers=check.num_layers or 0,
    )
    return loaded


def _remove(folder: Path | None) -> None:
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _dispatch_random(
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
    spec: str,
    modules: ModuleSet = "attn",
    trust_remote_code: bool = False,
    revision: str | None = None,
    offline: bool = False,
) -> list[TargetInfo]:
    """The target matrices and their shapes, from the config alone (weights never loaded; a
    hub model that is not cached has only its config.json fetched, unless offline)."""
    check = inspect_model_path(spec, revision, offline)
    if not check.ok:
        raise check.refusal()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from layerscope.analysis.models.targets import discover_targets

    if check.download:
        where: Any = spec
        try:
            config = AutoConfig.from_pretrained(
                spec, revision=revision, trust_remote_code=trust_remote_code
            )
        except Exception as error:  # wrong id, revision, no network: one line
            raise ModelLoadError(_download_failure(spec, revision, error)) from error
    else:
        where = resolve_model_spec(spec, revision, offline).path
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [t.info for t in discover_targets(model, modules)]
