"""Downloading a hub model that is not in the local cache: the one place a model is fetched.

Checking, listing and keying a model never touch the network; only :func:`ensure_model_available`
(called when a run starts, and by ``load_model``) downloads, through huggingface_hub with its
progress routed to the stage hook, and not at all when offline (``--offline`` or
``HF_HUB_OFFLINE=1``): then one line says how to get the model. Keeping the download apart keeps
the network out of every module a user's typing reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerscope.analysis.base.errors import mention, one_line
from layerscope.analysis.base.records import LoadStage
from layerscope.analysis.models.sources import (
    ModelLoadError,
    ModelNotCached,
    ModelSource,
    cached_snapshot,
    huggingface_cache_dir,
    resolve_model_spec,
    snapshot_complete,
)

# What hears each step of getting a model ready (download, tokenizer, weights, device).
StageCallback = Callable[[LoadStage], None]


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


def download_failure(model_id: str, revision: str | None, error: Exception) -> str:
    """One line for a failed fetch from the hub: a wrong revision, a gated or unknown model,
    or the network or disk failing (run again to resume)."""
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
        raise ModelLoadError(download_failure(spec, revision, error)) from error
    snapshot = cached_snapshot(spec, revision) or cached_snapshot(spec, folder.name)
    if snapshot is None:
        if not snapshot_complete(folder):
            raise ModelLoadError(
                f"model {spec!r}: the download finished without a config.json and weights "
                f"in {folder}; is it a causal LM repository?"
            )
        snapshot = (folder, folder.name)
    return ModelSource(spec, snapshot[0], snapshot[1])
