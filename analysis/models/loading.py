"""Loading a model for a computation: weights and tokenizer through transformers, or the same
architecture freshly initialised, ready for the engine as a :class:`LoadedModel`.

This is where torch and transformers come in, and only inside the functions (importing the
module stays cheap). Before it loads anything it downloads what is missing
(:mod:`~layerscope.analysis.models.downloads`), checks the files
(:mod:`~layerscope.analysis.models.inspection`) and takes the model's cache identity
(:mod:`~layerscope.analysis.models.identity`); where the layers go is
:mod:`~layerscope.analysis.models.placement`'s. ``trust_remote_code`` stays off unless the
caller asks for it. Transformers' own progress bars are routed to the stage hook, so a
minutes-long load of a large model says what it is doing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerscope.analysis.base.choices import DTYPES
from layerscope.analysis.base.errors import mention, one_line
from layerscope.analysis.base.records import Init, LoadStage, ModuleSet, TargetInfo
from layerscope.analysis.models.adapters import apply_adapter
from layerscope.analysis.models.downloads import (
    StageCallback,
    download_failure,
    ensure_model_available,
)
from layerscope.analysis.models.identity import model_identity
from layerscope.analysis.models.inspection import (
    config_num_layers,
    inspect_model_path,
    needs_remote_code,
    read_config,
)
from layerscope.analysis.models.placement import (
    dispatch_random,
    mapped_input_device,
    offload_folder,
    remove_offload,
    resolve_device,
)
from layerscope.analysis.models.sources import ModelLoadError, resolve_model_spec
from layerscope.analysis.models.weight_shapes import check_config_against_weights

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.models.targets import Target


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
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    revision: str | None = None,
    offline: bool = False,
    adapter: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer through the ordinary transformers path.

    ``on_stage`` hears each step as it begins (download, tokenizer, weights with their
    progress, device), so that a caller can show what a minutes-long load of a large model is
    doing. A hub id that is not cached is downloaded first (see
    :func:`~layerscope.analysis.models.downloads.ensure_model_available`).

    ``device_map`` ("auto", "balanced", "sequential", or accelerate's dict; None or "none": the
    whole model on ``device``) spreads the layers as ``from_pretrained`` does, within
    ``max_memory``; layers that fit nowhere are offloaded to a temporary folder (removed with
    the model). The model is then not moved, and ``LoadedModel.device`` is the input device.

    ``init="random"`` builds the same architecture from the model's config with freshly
    initialised weights instead (``AutoModelForCausalLM.from_config`` under
    ``torch.manual_seed(init_seed)``, on the CPU so that a seed gives the same weights on every
    machine; the global random state is left as it was): the follow-up paper's baseline.

    ``adapter`` (a PEFT adapter folder) is loaded onto the weights and merged into them (see
    :mod:`~layerscope.analysis.models.adapters`); the model is then named ``base+adapter``.
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
    identity = model_identity(spec, revision, offline, adapter)
    torch_device = resolve_device(device)
    torch_dtype = _torch_dtype(dtype, torch_device)
    if not trust_remote_code and needs_remote_code(source.path):
        raise ModelLoadError(
            f"model {spec!r} ships its own code (auto_map in config.json); layerscope runs it "
            f"only when asked to trust remote code ({mention('trust_remote_code')})"
        )
    # before transformers builds what the config says (10,000,000 layers took minutes and GBs)
    check_config_against_weights(source.path, read_config(source.path))
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
                model = dispatch_random(model, device_map, max_memory)
        else:
            placement: dict[str, Any] = {}
            if device_map is not None:
                offload = offload_folder()
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
        if adapter is not None:
            tell(LoadStage("weights", f"merging adapter {identity['adapter']['name']}"))
            model = apply_adapter(model, adapter)
    except ModelLoadError:
        remove_offload(offload)
        raise
    except Exception as error:  # any loader failure becomes one line for the user
        remove_offload(offload)
        raise ModelLoadError(f"model {spec!r} failed to load: {one_line(error)}") from error
    except BaseException:  # stopped while loading (Ctrl-C): no offloaded layers left behind
        remove_offload(offload)
        raise
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if device_map is None:
        tell(LoadStage("device", f"moving the model to {torch_device}"))
        model.to(torch_device)
        input_device = torch_device
    else:
        input_device = mapped_input_device(model)
        placed = sorted({str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()})
        tell(LoadStage("device", f"layers placed on {', '.join(placed) or input_device}"))
    if offload is not None:
        import weakref

        weakref.finalize(model, remove_offload, offload)  # the offloaded layers go with the model
    model.eval()
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=identity["name"],
        identity=identity,
        device=input_device,
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
        num_layers=config_num_layers(config) or 0,
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
            raise ModelLoadError(download_failure(spec, revision, error)) from error
    else:
        where = resolve_model_spec(spec, revision, offline).path
        check_config_against_weights(where, read_config(where))
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [t.info for t in discover_targets(model, modules)]
